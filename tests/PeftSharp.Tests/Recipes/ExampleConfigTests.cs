using PeftSharp.Config;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Recipes;

/// <summary>Every config in examples/ runs as it is, against an init-model stand-in of the same architecture.</summary>
public sealed class ExampleConfigTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-examples").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    public static TheoryData<string, string> Examples => new()
    {
        { "youtube-recs", "gpt2" },
        { "smoltalk-chat", "qwen2" },
        { "llama-all-linear", "llama" },
        { "qlora", "qwen2" },
        { "preference", "gpt2" },
    };

    [Theory]
    [MemberData(nameof(Examples))]
    public void RunsAgainstAStandIn(string example, string arch)
    {
        string model = Path.Combine(_root, "model-" + arch);
        ModelInitializer.Write(model, new InitModelOptions { Architecture = arch, Preset = "tiny", Seed = 7 });
        string output = Path.Combine(_root, "out-" + example);
        var config = RunConfig.Load(Path.Combine(TestAssets.RepoRoot, "examples", example, "config.yaml"),
            [$"model.name_or_path={model}", $"training.output_dir={output}", "training.max_steps=2", "data.max_length=48"]);

        var result = FineTuning.Run(config, generationSamples: 2, maxNewTokens: 4);

        Assert.Equal(example == "qlora" ? "qlora" : "lora", result.Method);
        Assert.Equal(2, result.Train.GlobalStep);
        Assert.True(double.IsFinite(result.Train.TrainingLoss) && result.Train.TrainingLoss > 0);
        Assert.True(File.Exists(Path.Combine(output, "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(output, "report.html")));
        Assert.True(result.OutputBytes < result.ModelBytes);

        using var reloaded = CausalLM.Load(model);
        var peft = PeftModel.FromPretrained(reloaded, output);
        Assert.Equal(config.Lora!.R, peft.Configs[PeftModel.DefaultAdapterName].R);
        using var fresh = CausalLM.Load(model);
        Assert.Equal(result.TrainableLine.Split(" || ")[0], PeftModel.Wrap(fresh, config.Lora).PrintTrainableParameters().Split(" || ")[0]);
    }
}
