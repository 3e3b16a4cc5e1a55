using System.Collections.Concurrent;
using System.Text.Json;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Tests.Formats;

/// <summary>The 450 golden cases made by Hugging Face's Rust tokenizers over five real tokenizer.json files.</summary>
public class TokenizerGoldenTests
{
    public sealed record GoldenCase(string Tokenizer, bool AddSpecialTokens, string Text, int[] Ids, string Decoded);

    private static readonly Lazy<GoldenCase[]> Cases = new(Load);
    private static readonly ConcurrentDictionary<string, Lazy<Tokenizer>> Tokenizers = new();

    internal static Tokenizer Get(string name) =>
        Tokenizers.GetOrAdd(name, n => new Lazy<Tokenizer>(() => Tokenizer.FromFolder(TestAssets.Path("tokenizers", n)))).Value;

    internal static GoldenCase[] All => Cases.Value;

    private static GoldenCase[] Load()
    {
        var list = new List<GoldenCase>();
        foreach (var line in File.ReadLines(TestAssets.Path("golden", "tokenizers.jsonl")))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            using var doc = JsonDocument.Parse(line);
            var r = doc.RootElement;
            list.Add(new GoldenCase(r.GetProperty("tokenizer").GetString()!, r.GetProperty("add_special_tokens").GetBoolean(),
                r.GetProperty("text").GetString()!, r.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
                r.GetProperty("decoded").GetString()!));
        }
        return list.ToArray();
    }

    public static IEnumerable<object[]> CaseLabels()
    {
        if (TestAssets.Root == null)
        {
            yield return ["no assets", -1];
            yield break;
        }
        var cases = All;
        var perTokenizer = new Dictionary<string, int>();
        for (int i = 0; i < cases.Length; i++)
        {
            var c = cases[i];
            int n = perTokenizer.GetValueOrDefault(c.Tokenizer);
            perTokenizer[c.Tokenizer] = n + 1;
            string text = c.Text.Length > 30 ? c.Text[..30] + "…" : c.Text;
            yield return [$"{c.Tokenizer}#{n} special={c.AddSpecialTokens} {JsonSerializer.Serialize(text)}", i];
        }
    }

    [AssetTheory]
    [MemberData(nameof(CaseLabels))]
    public void MatchesHuggingFace(string label, int index)
    {
        var c = All[index];
        var tokenizer = Get(c.Tokenizer);
        var ids = tokenizer.Encode(c.Text, c.AddSpecialTokens);
        Assert.True(c.Ids.SequenceEqual(ids), $"{label}: ids\nexpected [{string.Join(",", c.Ids)}]\nactual   [{string.Join(",", ids)}]");
        Assert.Equal(c.Decoded, tokenizer.Decode(c.Ids));
    }
}
