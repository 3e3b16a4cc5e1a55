using PeftSharp.Autograd;
using PeftSharp.Tensors;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Serving;

namespace PeftSharp.Tests.Serving;

/// <summary>
/// A tiny Llama model written by init-model (tokenizer and ChatML template included) and two LoRA adapters for it
/// (q_proj/v_proj, non-zero B so they change the output), plus one adapter made for a tiny GPT-2 (another base).
/// </summary>
public sealed class ServingFixture : IDisposable
{
    public ServingFixture()
    {
        Root = Path.Combine(Path.GetTempPath(), "peftsharp-serving-" + Guid.NewGuid().ToString("N"));
        Model = Path.Combine(Root, "llama");
        ModelInitializer.Write(Model, new InitModelOptions { Architecture = "llama", Seed = 3 });
        AdapterA = MakeAdapter(Model, "a", ["q_proj", "v_proj"], 11);
        AdapterB = MakeAdapter(Model, "b", ["q_proj", "v_proj", "o_proj"], 12);
        string gpt2 = Path.Combine(Root, "gpt2");
        ModelInitializer.Write(gpt2, new InitModelOptions { Architecture = "gpt2", Seed = 4 });
        OtherBaseAdapter = MakeAdapter(gpt2, "other", ["c_attn"], 13);
    }

    public string Root { get; }
    public string Model { get; }
    public string AdapterA { get; }
    public string AdapterB { get; }
    public string OtherBaseAdapter { get; }

    private string MakeAdapter(string model, string name, string[] targets, ulong seed)
    {
        string dir = Path.Combine(Root, "adapter-" + name);
        using var m = ModelLoading.Load(model);
        using var peft = PeftModel.Wrap(m, new LoraConfig { R = 4, LoraAlpha = 16, InitLoraWeights = "false", TargetModules = TargetModules.FromNames(targets) }, rng: new Rng(seed));
        peft.SaveAdapter(dir);
        return dir;
    }

    /// <summary>What `peftsharp generate` prints (greedy), without the final newline.</summary>
    public string CliGenerate(string prompt, string? adapter, int maxNewTokens, bool chat, IReadOnlyList<string>? stop = null)
    {
        var output = new StringWriter();
        GenerateCommand.Run(new GenerateArgs
        {
            Model = Model, Adapter = adapter, Prompt = prompt, Chat = chat, MaxNewTokens = maxNewTokens, Temperature = 0, Seed = 1, Stop = stop ?? [],
        }, ModelLoading.Load, output);
        string text = output.ToString();
        return text.EndsWith(Environment.NewLine, StringComparison.Ordinal) ? text[..^Environment.NewLine.Length] : text;
    }

    /// <summary>An engine over the tiny model with adapters "a" and "b" loaded.</summary>
    public ServingEngine Engine(ServingOptions? options = null)
    {
        var engine = ServingEngine.Load(Model, options, ModelLoading.Load, modelName: "tiny-llama");
        engine.LoadAdapterAsync("a", AdapterA).GetAwaiter().GetResult();
        engine.LoadAdapterAsync("b", AdapterB).GetAwaiter().GetResult();
        return engine;
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}
