using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Tests.Data;

public class TokenizationTests
{
    private static SftTokenization Make(int maxLength = 64, bool? completionOnly = null, bool assistantOnly = false, ChatTemplate? template = null) =>
        new(TinyTokenizer.Get(), template, new SftTokenizationOptions { MaxLength = maxLength, CompletionOnlyLoss = completionOnly, AssistantOnlyLoss = assistantOnly });

    [Fact]
    public void TextGetsEosAppendedOnceAndEveryTokenInTheLoss()
    {
        var tok = Make();
        var e = tok.TokenizeFull(SftExample.FromText("hello"));
        Assert.Equal([256, 257, (int)'o', TinyTokenizer.EndOfText], e.InputIds);
        Assert.All(e.InLoss, Assert.True);
        var already = tok.TokenizeFull(SftExample.FromText("hi<|endoftext|>"));
        Assert.Equal(1, already.InputIds.Count(i => i == TinyTokenizer.EndOfText));
    }

    [Fact]
    public void PadFallsBackToEosWithoutMaskingTheRealEos()
    {
        var tok = Make();
        Assert.Equal(TinyTokenizer.EndOfText, tok.PadId);
        var set = SftDataset.FromExamples([tok.TokenizeFull(SftExample.FromText("ab")), tok.TokenizeFull(SftExample.FromText("abcde"))], tok.PadId);
        var batch = set.Collate([0, 1]);
        Assert.Equal(2, batch.Batch);
        Assert.Equal(6, batch.SeqLen);
        Assert.Equal([(int)'a', 'b', TinyTokenizer.EndOfText, TinyTokenizer.EndOfText, TinyTokenizer.EndOfText, TinyTokenizer.EndOfText], batch.InputIds[..6]);
        Assert.Equal([1, 1, 1, 0, 0, 0], batch.AttentionMask![..6]);
        Assert.Equal([(int)'a', 'b', TinyTokenizer.EndOfText, -100, -100, -100], batch.Labels![..6]);
        Assert.Equal(TinyTokenizer.EndOfText, batch.Labels[11]);
        Assert.Equal(2 + 5, SftDataset.TargetCount(batch));
    }

    [Fact]
    public void CompletionOnlyLossIsOnByDefaultForPromptCompletion()
    {
        var ex = SftExample.FromPromptCompletion("Q: x\nA:", " yes");
        var on = Make().TokenizeFull(ex);
        int promptLength = TinyTokenizer.Get().Encode("Q: x\nA:", false).Length;
        Assert.Equal(Enumerable.Range(0, on.Length).Select(i => i >= promptLength), on.InLoss);
        Assert.Equal(TinyTokenizer.EndOfText, on.InputIds[^1]);
        Assert.Equal(" yes<|endoftext|>", TinyTokenizer.Get().Decode(on.InputIds.Where((_, i) => on.InLoss[i]).ToArray()));
        var off = Make(completionOnly: false).TokenizeFull(ex);
        Assert.All(off.InLoss, Assert.True);
    }

    [Fact]
    public void TruncationKeepsTheFirstMaxLengthTokens()
    {
        var tok = Make(maxLength: 3);
        var e = Assert.Single(tok.Tokenize(SftExample.FromText("abcdef")));
        Assert.Equal([(int)'a', 'b', 'c'], e.InputIds);
        var chunked = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions { MaxLength = 3, ChunkLongText = true });
        Assert.Equal(["abc", "def"], chunked.Tokenize(SftExample.FromText("abcdef")).Select(c => TinyTokenizer.Get().Decode(c.InputIds)));
    }

    [Fact]
    public void AssistantOnlyLossMarksExactlyTheAssistantContent()
    {
        var template = ChatTemplate.Builtin("chatml");
        var tok = Make(assistantOnly: true, template: template);
        var messages = new[] { ChatMessage.User("tell me"), ChatMessage.Assistant("hello there"), ChatMessage.User("again"), ChatMessage.Assistant("all well") };
        var e = tok.TokenizeFull(SftExample.FromMessages(messages));
        var tokenizer = TinyTokenizer.Get();
        Assert.Equal(template.Render(messages, false), tokenizer.Decode(e.InputIds));
        var runs = new List<string>();
        for (int i = 0; i < e.Length;)
        {
            if (!e.InLoss[i]) { i++; continue; }
            int j = i;
            while (j < e.Length && e.InLoss[j]) j++;
            runs.Add(tokenizer.Decode(e.InputIds[i..j]));
            i = j;
        }
        var spans = template.RenderWithSpans(messages, false);
        Assert.Equal(spans.AssistantSpans.Select(s => spans.Text.Substring(s.Start, s.Length)), runs);
        Assert.Contains("hello there", runs[0]);
        Assert.Contains("all well", runs[1]);
        var plain = Make(template: template).TokenizeFull(SftExample.FromMessages(messages));
        Assert.Equal(e.InputIds, plain.InputIds);
        Assert.All(plain.InLoss, Assert.True);
    }

    [Fact]
    public void ConversationalPromptCompletionMasksThePrompt()
    {
        var template = ChatTemplate.Builtin("chatml");
        var ex = new SftExample(DatasetFormat.ConversationalPromptCompletion, "x")
        {
            PromptMessages = [ChatMessage.User("2+2?")],
            CompletionMessages = [ChatMessage.Assistant("4")],
        };
        var e = Make(template: template).TokenizeFull(ex);
        string prompt = template.Render(ex.PromptMessages, true);
        int promptTokens = TinyTokenizer.Get().Encode(prompt, false).Length;
        Assert.Equal(promptTokens, e.InLoss.TakeWhile(b => !b).Count());
        Assert.StartsWith("4", TinyTokenizer.Get().Decode(e.InputIds[promptTokens..]));
    }

    [Fact]
    public void ChatTemplateSettingIsABuiltinNameOrJinja()
    {
        var messages = new[] { ChatMessage.User("x") };
        Assert.Equal(ChatTemplate.Builtin("chatml").Render(messages, false), SftData.ResolveChatTemplate("chatml", null)!.Render(messages, false));
        Assert.Equal("[x]", SftData.ResolveChatTemplate("{% for m in messages %}[{{ m.content }}]{% endfor %}", null)!.Render(messages, false));
        Assert.Null(SftData.ResolveChatTemplate(null, null));
        Assert.Throws<PeftSharpException>(() => SftData.ResolveChatTemplate("vicuna", null));
    }

    [Fact]
    public void ConversationalWithoutTemplateIsAUserError()
    {
        var e = Assert.Throws<PeftSharpException>(() => Make().TokenizeFull(SftExample.FromMessages([ChatMessage.User("x")], "c.jsonl:7")));
        Assert.StartsWith("c.jsonl:7: conversational data needs a chat template", e.Message);
    }
}
