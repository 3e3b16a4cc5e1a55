using System.Text.Json;
using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Tests.Formats;

/// <summary>
/// The real chat templates of qwen/, llama3/ and llama2/ against Jinja2 3.1.2's renderings
/// (assets/golden/chat_templates.jsonl, made by tools/chat_template_goldens.py).
/// </summary>
public class ChatTemplateGoldenTests
{
    private sealed record GoldenCase(string Tokenizer, List<ChatMessage> Messages, bool AddGenerationPrompt, string? Rendered, string? Error);

    private static readonly Lazy<Dictionary<string, GoldenCase>> Cases = new(Load);

    private static Dictionary<string, GoldenCase> Load()
    {
        var cases = new Dictionary<string, GoldenCase>();
        if (TestAssets.Root == null) return cases;
        var perTokenizer = new Dictionary<string, int>();
        foreach (var line in File.ReadLines(TestAssets.Path("golden", "chat_templates.jsonl")))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var doc = JsonDocument.Parse(line);
            var root = doc.RootElement;
            string tokenizer = root.GetProperty("tokenizer").GetString()!;
            var messages = root.GetProperty("messages").EnumerateArray()
                .Select(m => new ChatMessage(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString())).ToList();
            bool gen = root.GetProperty("add_generation_prompt").GetBoolean();
            string? rendered = root.TryGetProperty("rendered", out var r) ? r.GetString() : null;
            string? error = root.TryGetProperty("error", out var e) ? e.GetString() : null;
            int n = perTokenizer.GetValueOrDefault(tokenizer);
            perTokenizer[tokenizer] = n + 1;
            string label = $"{tokenizer} conversation {n / 2 + 1} ({messages.Count} messages, first {messages[0].Role}) add_generation_prompt={gen.ToString().ToLowerInvariant()}";
            cases[label] = new GoldenCase(tokenizer, messages, gen, rendered, error);
        }
        return cases;
    }

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        if (Cases.Value.Count == 0) data.Add("(assets missing)");
        foreach (var name in Cases.Value.Keys) data.Add(name);
        return data;
    }

    [AssetFact]
    public void GoldenFileHasAllCases() => Assert.Equal(42, Cases.Value.Count);

    [AssetTheory]
    [MemberData(nameof(CaseNames))]
    public void RendersLikeJinja2(string name)
    {
        var c = Cases.Value[name];
        var template = ChatTemplate.FromTokenizerConfig(TestAssets.Path("tokenizers", c.Tokenizer, "tokenizer_config.json"));
        if (c.Error != null)
        {
            var ex = Assert.Throws<ChatTemplateException>(() => template.Render(c.Messages, c.AddGenerationPrompt));
            Assert.Equal(c.Error, ex.Message);
        }
        else Assert.Equal(c.Rendered, template.Render(c.Messages, c.AddGenerationPrompt));
    }
}
