using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Tests.Data;
using PeftSharp.Training.Preference;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>TRL's preference formats and tokenize_row's truncation.</summary>
public class PreferenceDataTests
{
    private static PreferenceExample Convert(string json, ChatTemplate? template = null) =>
        PreferenceData.Convert(new DataRecord("d.jsonl", 1, JsonNode.Parse(json)!.AsObject()), template);

    [Fact]
    public void ExplicitAndImplicitPrompts()
    {
        var e = Convert("""{"prompt": "Q?", "chosen": " yes", "rejected": " no", "margin": 0.5}""");
        Assert.Equal(("Q?", " yes", " no", 0.5), (e.Prompt, e.Chosen, e.Rejected, e.Margin));
        // TRL's extract_prompt: the shared prefix, the space before the split going to the completions.
        var i = Convert("""{"chosen": "The sky is blue.", "rejected": "The sky is green."}""");
        Assert.Equal(("The sky is", " blue.", " green."), (i.Prompt, i.Chosen, i.Rejected));
        Assert.Equal(("ab", "c", "d"), PreferenceData.ExtractPrompt("abc", "abd"));
    }

    [Fact]
    public void ConversationalPairsRenderPromptAndCompletionsAsTrl()
    {
        var template = ChatTemplate.Builtin("chatml");
        var e = Convert("""{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]}""", template);
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", e.Prompt);
        Assert.Equal("Hello!<|im_end|>\n", e.Chosen);
        Assert.Equal("Go away.<|im_end|>\n", e.Rejected);
        // Implicit prompt in conversations: the shared leading messages.
        var i = Convert("""{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]}""", template);
        Assert.Equal(e, i with { Where = e.Where });
        var u = Convert("""{"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Yo"}], "label": false}""", template);
        Assert.Equal(("Yo<|im_end|>\n", false), (u.Completion, u.Label));
        var ex = Assert.Throws<PeftSharpException>(() => Convert("""{"prompt": "x", "completion": "y"}"""));
        Assert.Contains("d.jsonl:1", ex.Message);
    }

    [Fact]
    public void TruncationKeepsThePromptsEndAndTheCompletionsStart()
    {
        var tokenizer = TinyTokenizer.Get();
        int eos = TinyTokenizer.EndOfText;
        var t = new PreferenceTokenizer(tokenizer, new PreferenceOptions { MaxPromptLength = 3, MaxCompletionLength = 4, MaxLength = 6 });
        var prompt = t.Prompt("abcdef");
        Assert.Equal(tokenizer.Encode("def", addSpecialTokens: false), prompt);
        Assert.Equal([.. tokenizer.Encode("xy", addSpecialTokens: false), eos], t.Completion("xy"));
        Assert.Equal(tokenizer.Encode("wxyz", addSpecialTokens: false), t.Completion("wxyzuv")); // EOS cut with the rest
        var s = t.Sequence(prompt, "wxyz"); // 3 + 4 > 6: keep_end drops the prompt's first token
        Assert.Equal([.. tokenizer.Encode("efwxyz", addSpecialTokens: false)], s.Ids);
        Assert.Equal(2, s.PromptLength);
        var keepStart = new PreferenceTokenizer(tokenizer, new PreferenceOptions { MaxPromptLength = 3, MaxCompletionLength = 4, MaxLength = 6, TruncationMode = "keep_start" });
        var k = keepStart.Sequence(prompt, "wxyz");
        Assert.Equal([.. tokenizer.Encode("defwxy", addSpecialTokens: false)], k.Ids);
        Assert.Equal(3, k.PromptLength);
        // A batch's targets are the completion tokens only; positions are summed per sequence.
        var batch = SequenceBatch.Build([s, k], 0);
        Assert.Equal([4, 3], batch.CompletionTargets);
        Assert.Equal(-100, batch.Targets[0]);
        Assert.Equal(s.Ids[2], batch.Targets[1]);
    }
}
