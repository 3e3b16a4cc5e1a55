using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Tests.Data;

/// <summary>assistant_only_loss trains the end-of-turn token after each assistant turn, so the model learns to stop.</summary>
public sealed class AssistantEndOfTurnTests
{
    private static readonly ChatMessage[] Conversation =
        [ChatMessage.User("Hi there"), ChatMessage.Assistant("Hello friend"), ChatMessage.User("Bye now"), ChatMessage.Assistant("Goodbye")];

    private static TokenizedExample Tokenize(Tokenizer tokenizer, ChatTemplate template) =>
        new SftTokenization(tokenizer, template, new SftTokenizationOptions { AssistantOnlyLoss = true })
            .TokenizeFull(SftExample.FromMessages(Conversation, "test"));

    /// <summary>
    /// For every occurrence of the end-of-turn token: whether it is in the loss. Also checks that the token after an
    /// assistant end-of-turn (the next turn's opening) is not trained, and the token before it (the content's last) is.
    /// </summary>
    private static bool[] EndOfTurnInLoss(TokenizedExample e, int endOfTurn)
    {
        var result = new List<bool>();
        for (int t = 0; t < e.Length; t++)
        {
            if (e.InputIds[t] != endOfTurn) continue;
            result.Add(e.InLoss[t]);
            if (e.InLoss[t])
            {
                Assert.True(e.InLoss[t - 1]);
                if (t + 1 < e.Length) Assert.False(e.InLoss[t + 1]);
            }
        }
        return [.. result];
    }

    [AssetTheory]
    [InlineData("qwen", "chatml", "<|im_end|>", new[] { false, true, false, true })]
    [InlineData("llama3", "llama3", "<|eot_id|>", new[] { false, true, false, true })]
    [InlineData("llama2", "llama2", "</s>", new[] { true, true })]
    [InlineData("llama2", "zephyr", "</s>", new[] { false, true, false, true })]
    public void BuiltinTemplatesTrainTheEndOfTurnToken(string tokenizerName, string template, string endOfTurn, bool[] expected)
    {
        var tokenizer = Tokenizer.FromFolder(TestAssets.Path("tokenizers", tokenizerName));
        var e = Tokenize(tokenizer, ChatTemplate.Builtin(template));
        Assert.Equal(expected, EndOfTurnInLoss(e, tokenizer.TokenToId(endOfTurn)!.Value));
    }

    [AssetFact]
    public void TemplatesWithoutGenerationBlocksTrainTheEndOfTurnTokenToo()
    {
        // Qwen's own template (no generation blocks; it adds a default system turn).
        string folder = TestAssets.Path("tokenizers", "qwen");
        var tokenizer = Tokenizer.FromFolder(folder);
        var template = ChatTemplate.FromTokenizerConfig(folder);
        Assert.False(template.HasGenerationBlocks);
        var e = Tokenize(tokenizer, template);
        Assert.Equal([false, false, true, false, true], EndOfTurnInLoss(e, tokenizer.TokenToId("<|im_end|>")!.Value));

        // A template whose end-of-turn is a space then EOS, as Llama 2's.
        var llama2 = Tokenizer.FromFolder(TestAssets.Path("tokenizers", "llama2"));
        var plain = ChatTemplate.Parse("{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]{% else %} {{ m.content }} </s>{% endif %}{% endfor %}");
        Assert.Equal([true, true], EndOfTurnInLoss(Tokenize(llama2, plain), llama2.EosTokenId!.Value));
    }

    [Fact]
    public void EndOfTurnIsTheSpecialTokenAfterSpacesOnly()
    {
        var tokenization = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions());
        Assert.Equal(12, tokenization.EndOfTurn("ab<|im_end|>\n", 2));
        Assert.Equal(13, tokenization.EndOfTurn("ab <|im_end|>\n", 2));
        Assert.Equal(2, tokenization.EndOfTurn("ab\n<|im_start|>", 2));
        Assert.Equal(2, tokenization.EndOfTurn("ab cd", 2));
    }
}
