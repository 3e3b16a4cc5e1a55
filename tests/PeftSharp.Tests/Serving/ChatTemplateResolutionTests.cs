using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Models.Generation;

namespace PeftSharp.Tests.Serving;

public sealed class ChatTemplateResolutionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-tpl-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void OneResolutionForTrainingTheCliAndServing()
    {
        ChatMessage[] hi = [ChatMessage.User("hi")];
        Assert.Null(ChatTemplates.Resolve(null, null));
        Assert.Equal(ChatTemplate.Builtin("chatml").Render(hi, true), ChatTemplates.Resolve("chatml", _dir)!.Render(hi, true));
        Assert.Equal("<hi>", ChatTemplates.Resolve("{% for m in messages %}<{{ m.content }}>{% endfor %}", null)!.Render(hi, false));
        Assert.Throws<PeftSharpException>(() => ChatTemplates.Resolve("no-such-format", _dir));

        // A folder without a template: an error unless a fallback is allowed, which comes with a notice.
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"eos_token": "<|im_end|>"}""");
        Assert.False(ChatTemplates.HasTemplate(_dir));
        Assert.Throws<PeftSharpException>(() => ChatTemplates.Resolve(null, _dir));
        var fallback = ChatTemplates.Resolve(null, _dir, ChatTemplates.DefaultFallback, out string? notice);
        Assert.Contains("chatml", notice);
        Assert.Contains("<|im_start|>user", fallback!.Render(hi, true));

        // The folder's own template wins over the fallback; an explicit one wins over the folder's.
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"chat_template": "{% for m in messages %}[{{ m.content }}]{% endfor %}"}""");
        Assert.Equal("[hi]", ChatTemplates.Resolve(null, _dir, ChatTemplates.DefaultFallback, out notice)!.Render(hi, false));
        Assert.Null(notice);
        Assert.Equal(PeftSharp.Data.SftData.ResolveChatTemplate(null, _dir)!.Render(hi, false), ChatTemplates.Resolve(null, _dir)!.Render(hi, false));
        Assert.Contains("<|im_start|>", ChatTemplates.Resolve("chatml", _dir)!.Render(hi, false));
    }

    [Fact]
    public void SettingsOverrideTheGenerationConfigAndTurnSamplingOnOrOff()
    {
        var config = new PeftSharp.Formats.HfConfig.GenerationConfig { DoSample = true, Temperature = 0.7, TopK = 40, MaxNewTokens = 33, EosTokenIds = [2] };
        var fromConfig = new GenerationSettings { Seed = 5 }.Resolve(config, null, null, 10);
        Assert.True(fromConfig.DoSample);
        Assert.Equal(33, fromConfig.MaxNewTokens);
        Assert.Equal([2], fromConfig.EosTokenIds);
        var greedy = new GenerationSettings { Temperature = 0, TopP = 0.5, MaxNewTokens = 4, Stop = ["\n"] }.Resolve(config, null, null, 10);
        Assert.True(greedy.IsGreedy);
        Assert.Equal(4, greedy.MaxNewTokens);
        Assert.Equal(["\n"], greedy.StopStrings);
        var sampled = new GenerationSettings { TopP = 0.9 }.Resolve(null, null, null, 10);
        Assert.True(sampled.DoSample);
        Assert.Equal(10, sampled.MaxNewTokens);
        Assert.Throws<PeftSharpException>(() => new GenerationSettings { TopP = 0 }.Resolve(null, null, null, 10));
    }
}
