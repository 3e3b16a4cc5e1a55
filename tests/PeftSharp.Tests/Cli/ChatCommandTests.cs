using PeftSharp.Autograd;
using PeftSharp.Cli.Commands;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Cli;

/// <summary>Delegates to a real model and records the tokens of each decoding session's first call (the prompt).</summary>
internal sealed class PromptRecordingLM(ICausalLM inner) : ICausalLM
{
    public List<int[]> Prompts { get; } = [];
    public bool Disposed { get; private set; }
    public ModelConfig Config => inner.Config;
    public IReadOnlyList<LinearSlot> Linears => inner.Linears;
    public IEnumerable<Parameter> Parameters => inner.Parameters;
    public Tensor Forward(Ops ops, TokenBatch batch) => inner.Forward(ops, batch);
    public Tensor Loss(Ops ops, TokenBatch batch) => inner.Loss(ops, batch);
    public IDecodeSession StartDecoding(int batch, int maxTokens) => new Session(inner.StartDecoding(batch, maxTokens), Prompts);

    public void Dispose()
    {
        Disposed = true;
        inner.Dispose();
    }

    private sealed class Session(IDecodeSession inner, List<int[]> prompts) : IDecodeSession
    {
        private bool _first = true;
        public int VocabSize => inner.VocabSize;

        public void Append(ReadOnlySpan<int> tokens, ReadOnlySpan<int> mask, int count, Span<float> lastLogits)
        {
            if (_first) prompts.Add(tokens.ToArray());
            _first = false;
            inner.Append(tokens, mask, count, lastLogits);
        }

        public void Dispose() => inner.Dispose();
    }
}

public sealed class ChatCommandTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "peftsharp-chat-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private string Qwen()
    {
        string folder = Path.Combine(_root, "qwen2");
        ModelInitializer.Write(folder, new InitModelOptions { Architecture = "qwen2", Seed = 11 });
        return folder;
    }

    private static (IReadOnlyList<ChatMessage> History, PromptRecordingLM Model, string Output) Chat(string folder, string input, ChatArgs? args = null)
    {
        PromptRecordingLM? model = null;
        var output = new StringWriter();
        var history = ChatCommand.Run(args ?? new ChatArgs { Model = folder, MaxNewTokens = 6, Temperature = 0 },
            path => model = new PromptRecordingLM(PeftSharp.Cli.ModelLoading.Load(path)), new StringReader(input), output);
        return (history, model!, output.ToString());
    }

    [Fact]
    public void SecondTurnPromptHoldsTheFirstReply()
    {
        string folder = Qwen();
        var (history, model, output) = Chat(folder, "hello there\nand then?\n");

        Assert.Equal(["user", "assistant", "user", "assistant"], history.Select(m => m.Role));
        Assert.Equal(2, model.Prompts.Count);
        Assert.True(model.Disposed);
        var tokenizer = Tokenizer.FromFolder(folder);
        var template = ChatTemplate.FromTokenizerConfig(folder);
        string firstReply = history[1].Content!;
        Assert.NotEmpty(firstReply);
        Assert.Contains(firstReply, output);
        Assert.Equal(tokenizer.Encode(template.Render([history[0]], addGenerationPrompt: true), addSpecialTokens: false), model.Prompts[0]);
        var second = tokenizer.Encode(template.Render(history.Take(3).ToList(), addGenerationPrompt: true), addSpecialTokens: false);
        Assert.Equal(second, model.Prompts[1]);
        Assert.Contains("<|im_start|>assistant\n" + firstReply + "<|im_end|>", tokenizer.Decode(model.Prompts[1]));
        Assert.True(model.Prompts[1].Length > model.Prompts[0].Length + 4);
    }

    [Fact]
    public void ResetClearsTheHistoryAndExitEnds()
    {
        string folder = Qwen();
        var args = new ChatArgs { Model = folder, System = "Be brief.", MaxNewTokens = 4, Temperature = 0 };
        var (history, model, output) = Chat(folder, "hello there\n/reset\nhello there\n/exit\nnever read\n", args);

        Assert.Equal(2, model.Prompts.Count);
        Assert.Equal(model.Prompts[0], model.Prompts[1]);
        Assert.Equal(["system", "user", "assistant"], history.Select(m => m.Role));
        Assert.Equal("Be brief.", history[0].Content);
        Assert.Contains("(history cleared)", output);
        Assert.Contains("<|im_start|>system\nBe brief.<|im_end|>", Tokenizer.FromFolder(folder).Decode(model.Prompts[0]));
    }

    [Fact]
    public void EndOfInputOrAnEmptyLineEndsCleanly()
    {
        string folder = Qwen();
        var (history, model, _) = Chat(folder, "");
        Assert.Empty(history);
        Assert.Empty(model.Prompts);
        Assert.True(model.Disposed);
        var (afterEmpty, model2, _) = Chat(folder, "hi\n\nnot read\n");
        Assert.Equal(2, afterEmpty.Count);
        Assert.Single(model2.Prompts);
    }

    [Fact]
    public void FolderWithoutATemplateFallsBackToChatml()
    {
        string folder = Qwen();
        string config = Path.Combine(folder, "tokenizer_config.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        json.Remove("chat_template");
        File.WriteAllText(config, json.ToJsonString());
        var template = ChatCommand.LoadTemplate(folder, out string? notice);
        Assert.NotNull(notice);
        Assert.Contains("chatml", notice);
        Assert.Equal("<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n", template.Render([ChatMessage.User("x")], addGenerationPrompt: true));
        var (_, model, output) = Chat(folder, "hi\n");
        Assert.Single(model.Prompts);
        Assert.StartsWith(notice, output);
    }
}
