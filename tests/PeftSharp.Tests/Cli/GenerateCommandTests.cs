using System.CommandLine;
using System.Text;
using PeftSharp.Autograd;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Models.Init;
using PeftSharp.Tests.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Cli;

/// <summary>A model whose decoding session is a <see cref="FakeDecodeSession"/> bigram table.</summary>
internal sealed class FakeCausalLM(ModelConfig config) : ICausalLM
{
    public ModelConfig Config { get; } = config;
    public IReadOnlyList<LinearSlot> Linears => [];
    public IEnumerable<Parameter> Parameters => [];
    public FakeDecodeSession? Session { get; private set; }
    public int MaxTokens { get; private set; }
    public bool Disposed { get; private set; }

    public Tensor Forward(Ops ops, TokenBatch batch) => throw new NotSupportedException();
    public Tensor Loss(Ops ops, TokenBatch batch) => throw new NotSupportedException();

    public IDecodeSession StartDecoding(int batch, int maxTokens)
    {
        MaxTokens = maxTokens;
        return Session = new FakeDecodeSession(batch, Config.VocabSize, trigram: false);
    }

    public void Dispose() => Disposed = true;
}

/// <summary>Records every Write call, to see that text is streamed in pieces.</summary>
internal sealed class RecordingWriter : StringWriter
{
    public List<string> Pieces { get; } = [];
    public override void Write(string? value)
    {
        if (!string.IsNullOrEmpty(value)) Pieces.Add(value);
        base.Write(value);
    }
}

public sealed class GenerateCommandTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "peftsharp-gen-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private string TinyFolder(string arch)
    {
        string folder = Path.Combine(_root, arch);
        if (!Directory.Exists(folder)) ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, ConfigOnly = true });
        return folder;
    }

    private static int[] Expected(int vocab, int[] prompt, GenerationOptions options) =>
        Generator.Generate(new FakeDecodeSession(1, vocab, trigram: false), [prompt], options)[0].Tokens;

    [Fact]
    public void TokenIdsInAndOutNeedNoTokenizer()
    {
        string folder = Directory.CreateDirectory(Path.Combine(_root, "bare")).FullName;
        var config = new Gpt2Config { VocabSize = 50 };
        FakeCausalLM? model = null;
        var output = new StringWriter();
        var result = GenerateCommand.Run(new GenerateArgs { Model = folder, PromptIds = [3, 1, 4], MaxNewTokens = 7, OutputIds = true },
            path => { Assert.Equal(folder, path); return model = new FakeCausalLM(config); }, output);
        var expected = Expected(50, [3, 1, 4], new GenerationOptions { MaxNewTokens = 7 });
        Assert.Equal(expected, result.Tokens);
        Assert.Equal("[" + string.Join(",", expected) + "]" + Environment.NewLine, output.ToString());
        Assert.Equal(3 + 7, model!.MaxTokens);
        Assert.True(model.Disposed);
    }

    [Fact]
    public void TextPromptIsEncodedAndTheContinuationStreamed()
    {
        string folder = TinyFolder("gpt2");
        var tokenizer = Tokenizer.FromFolder(folder);
        var config = ModelConfig.Load(folder);
        FakeCausalLM? model = null;
        var output = new RecordingWriter();
        var result = GenerateCommand.Run(new GenerateArgs { Model = folder, Prompt = "The cat sat", MaxNewTokens = 12, Seed = 5, Temperature = 0.9, TopK = 40 },
            _ => model = new FakeCausalLM(config), output);

        int[] prompt = tokenizer.Encode("The cat sat");
        Assert.Equal(prompt, model!.Session!.History(0).Take(prompt.Length));
        var options = new GenerationOptions { MaxNewTokens = 12, DoSample = true, Temperature = 0.9, TopK = 40, Seed = 5, EosTokenIds = GenerationConfig.Load(folder).EosTokenIds };
        Assert.Equal(Expected(config.VocabSize, prompt, options), result.Tokens);
        Assert.Equal(tokenizer.Decode(result.Tokens, skipSpecialTokens: true) + Environment.NewLine, output.ToString());
        Assert.True(output.Pieces.Count > 1, "the continuation should be written as it is generated, in several pieces");
    }

    [Theory]
    [InlineData(3)]
    [InlineData(7)]
    public void StopStringsEndTheTextBeforeThemAndAreNeverPrinted(int at)
    {
        string folder = TinyFolder("gpt2");
        var tokenizer = Tokenizer.FromFolder(folder);
        var config = ModelConfig.Load(folder);
        var free = GenerateCommand.Run(new GenerateArgs { Model = folder, Prompt = "The cat sat", MaxNewTokens = 12, Temperature = 0 },
            _ => new FakeCausalLM(config), TextWriter.Null);
        string text = tokenizer.Decode(free.Tokens, skipSpecialTokens: true);
        // A stop string made of the text of two generated tokens, starting with token `at`.
        string before = tokenizer.Decode(free.Tokens[..at], skipSpecialTokens: true);
        string stop = tokenizer.Decode(free.Tokens[..(at + 2)], skipSpecialTokens: true)[before.Length..];
        Assert.False(string.IsNullOrWhiteSpace(stop));
        int cut = text.IndexOf(stop, StringComparison.Ordinal);

        var output = new RecordingWriter();
        var result = GenerateCommand.Run(new GenerateArgs { Model = folder, Prompt = "The cat sat", MaxNewTokens = 12, Temperature = 0, Stop = ["never appears", stop] },
            _ => new FakeCausalLM(config), output);
        Assert.Equal(FinishReason.StopString, result.Reason);
        Assert.Equal(text[..cut], result.Text);
        Assert.Equal(text[..cut] + Environment.NewLine, output.ToString());
        Assert.DoesNotContain(output.Pieces, piece => piece.Contains(stop, StringComparison.Ordinal));
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Run(new GenerateArgs { Model = folder, Prompt = "x", Stop = [""] },
            _ => new FakeCausalLM(config), TextWriter.Null));
    }

    [Fact]
    public void ChatPromptGoesThroughTheChatTemplate()
    {
        string folder = TinyFolder("qwen2");
        var tokenizer = Tokenizer.FromFolder(folder);
        FakeCausalLM? model = null;
        GenerateCommand.Run(new GenerateArgs { Model = folder, Prompt = "hello there", Chat = true, MaxNewTokens = 3, Temperature = 0 },
            _ => model = new FakeCausalLM(ModelConfig.Load(folder)), TextWriter.Null);
        var expected = tokenizer.Encode("<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n", addSpecialTokens: false);
        Assert.Equal(expected, model!.Session!.History(0).Take(expected.Length));
        Assert.Equal(tokenizer.TokenToId("<|im_start|>"), model.Session.History(0)[0]);
    }

    [Fact]
    public void SettingsComeFromGenerationConfigAndTheCommandLineOverrides()
    {
        var generation = new GenerationConfig { DoSample = true, Temperature = 0.7, TopK = 20, MaxNewTokens = 33, EosTokenIds = [5, 6] };
        var fromFile = GenerateCommand.Options(new GenerateArgs { Model = "m", Seed = 1 }, generation, new Gpt2Config(), null);
        Assert.Equal((true, 0.7, 20, 33, 1UL), (fromFile.DoSample, fromFile.Temperature, fromFile.TopK, fromFile.MaxNewTokens, fromFile.Seed));
        Assert.Equal([5, 6], fromFile.EosTokenIds);
        var greedy = GenerateCommand.Options(new GenerateArgs { Model = "m", Temperature = 0, TopP = 0.5, MaxNewTokens = 4 }, generation, null, null);
        Assert.True(greedy.IsGreedy);
        Assert.Equal((4, 0.5), (greedy.MaxNewTokens, greedy.TopP));
        var sampled = GenerateCommand.Options(new GenerateArgs { Model = "m", TopP = 0.9 }, null, null, null);
        Assert.Equal((true, GenerateCommand.DefaultMaxNewTokens), (sampled.DoSample, sampled.MaxNewTokens));
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Options(new GenerateArgs { Model = "m", TopP = 1.5 }, null, null, null));
    }

    [Fact]
    public void MaxNewTokensIsCutToTheModelsPositions()
    {
        string folder = Directory.CreateDirectory(Path.Combine(_root, "short")).FullName;
        var config = new Gpt2Config { VocabSize = 30, MaxPositionEmbeddings = 8 };
        var result = GenerateCommand.Run(new GenerateArgs { Model = folder, PromptIds = [1, 2, 3], MaxNewTokens = 50, OutputIds = true },
            _ => new FakeCausalLM(config), TextWriter.Null);
        Assert.Equal(5, result.Tokens.Length);
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Run(new GenerateArgs { Model = folder, PromptIds = Enumerable.Range(0, 8).ToArray(), OutputIds = true },
            _ => new FakeCausalLM(config), TextWriter.Null));
    }

    [Fact]
    public void AdapterGoesThroughTheSeam()
    {
        string folder = Directory.CreateDirectory(Path.Combine(_root, "adapter")).FullName;
        var config = new Gpt2Config { VocabSize = 20 };
        var base_ = new FakeCausalLM(config);
        var adapted = new FakeCausalLM(config);
        string? seen = null;
        GenerateCommand.Run(new GenerateArgs { Model = folder, Adapter = "my-adapter", PromptIds = [1], MaxNewTokens = 2, OutputIds = true },
            _ => base_, TextWriter.Null, (m, path) => { Assert.Same(base_, m); seen = path; return adapted; });
        Assert.Equal("my-adapter", seen);
        Assert.NotNull(adapted.Session);
        Assert.Null(base_.Session);
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Run(new GenerateArgs { Model = folder, Adapter = "x", PromptIds = [1], OutputIds = true },
            _ => new FakeCausalLM(config), TextWriter.Null));
    }

    [Fact]
    public void RejectsAmbiguousOrMissingPrompts()
    {
        string folder = TinyFolder("llama");
        Func<string, ICausalLM> load = _ => new FakeCausalLM(ModelConfig.Load(folder));
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Run(new GenerateArgs { Model = folder }, load, TextWriter.Null));
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Run(new GenerateArgs { Model = folder, Prompt = "a", PromptIds = [1] }, load, TextWriter.Null));
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Run(new GenerateArgs { Model = folder, PromptIds = [1], Chat = true }, load, TextWriter.Null));
        string bare = Directory.CreateDirectory(Path.Combine(_root, "no-tokenizer")).FullName;
        Assert.Throws<PeftSharpException>(() => GenerateCommand.Run(new GenerateArgs { Model = bare, Prompt = "a" }, load, TextWriter.Null));
        Assert.Throws<PeftSharpException>(() => GenerateCommand.ParseIds("1,x,3"));
        Assert.Equal([1, 2, 3], GenerateCommand.ParseIds(" 1, 2,3 ")!);
    }

    [Fact]
    public void CommandLineReportsAMissingModelAsAUserError()
    {
        var root = new RootCommand();
        root.Subcommands.Add(GenerateCommand.Create());
        var error = new StringWriter();
        int code = CliRunner.Run(root, ["generate", "--model", Path.Combine(_root, "no-such-model"), "--prompt-ids", "1,2", "--output-ids"], error);
        Assert.Equal(CliRunner.UserError, code);
        Assert.Contains("no-such-model", error.ToString());
    }

    [Fact]
    public void RealLoaderGeneratesWhatGreedyDecodingGives()
    {
        string folder = Path.Combine(_root, "real-llama");
        ModelInitializer.Write(folder, new InitModelOptions { Architecture = "llama", Seed = 3 });
        var output = new StringWriter();
        var result = GenerateCommand.Run(new GenerateArgs { Model = folder, PromptIds = [5, 9, 2], MaxNewTokens = 6, OutputIds = true, Temperature = 0 },
            PeftSharp.Cli.ModelLoading.Load, output);

        using var model = PeftSharp.Models.CausalLM.Load(folder);
        using var session = model.StartDecoding(1, 16);
        var logits = new float[model.Config.VocabSize];
        var expected = new List<int>();
        int[] next = [5, 9, 2];
        for (int step = 0; step < 6; step++)
        {
            session.Append(next, Enumerable.Repeat(1, next.Length).ToArray(), next.Length, logits);
            int id = Array.IndexOf(logits, logits.Max());
            expected.Add(id);
            next = [id];
        }
        int[] eos = model.Config.EosTokenIds;
        int stop = expected.FindIndex(id => eos.Contains(id));
        Assert.Equal(stop < 0 ? expected : expected.Take(stop + 1), result.Tokens);
        Assert.StartsWith("[", output.ToString());
    }

    [Fact]
    public void StreamingDecoderHoldsBackIncompleteCharacters()
    {
        var tokenizer = Tokenizer.FromFolder(TinyFolder("gpt2"));
        string text = "naïve 🙂 done\nnext line";
        var ids = tokenizer.Encode(text, addSpecialTokens: false);
        var streamer = new StreamingDecoder(x => tokenizer.Decode(x));
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            string piece = streamer.Push(id);
            Assert.DoesNotContain('\uFFFD', piece);
            sb.Append(piece);
        }
        sb.Append(streamer.Flush());
        Assert.Equal(text, sb.ToString());
    }
}
