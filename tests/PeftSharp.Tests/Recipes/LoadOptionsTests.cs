using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Recipes;

/// <summary>model.dtype as the run config documents it: auto keeps the stored dtype, float32 converts, 16-bit must match.</summary>
public sealed class LoadOptionsTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-load-options").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private RunConfig Config(string model, string dtype, string extra = "") => RunConfig.FromTree(ConfigTree.ParseYaml($"""
        model:
          name_or_path: "{model}"
          dtype: {dtype}
        lora:
          r: 4
          target_modules: all-linear
          {extra}
        data:
          train_file: t.jsonl
        training:
          output_dir: out
        """));

    [Fact]
    public void ModelDtypeChoosesHowWeightsAreLoaded()
    {
        string bf16 = Path.Combine(_root, "bf16"), f32 = Path.Combine(_root, "f32");
        ModelInitializer.Write(bf16, new InitModelOptions { Architecture = "llama", Dtype = "bfloat16" });
        ModelInitializer.Write(f32, new InitModelOptions { Architecture = "llama" });

        Assert.False(FineTuning.LoadOptionsFor(Config(bf16, "auto"), bf16).Float32);
        Assert.True(FineTuning.LoadOptionsFor(Config(bf16, "float32"), bf16).Float32);
        Assert.False(FineTuning.LoadOptionsFor(Config(bf16, "bfloat16"), bf16).Float32);
        var e = Assert.Throws<PeftSharpException>(() => FineTuning.LoadOptionsFor(Config(f32, "bfloat16"), f32));
        Assert.Contains("model.dtype bfloat16", e.Message);
        Assert.Contains("F32", e.Message);
        Assert.Throws<PeftSharpException>(() => FineTuning.LoadOptionsFor(Config(bf16, "float16"), bf16));

        // bias "all" keeps its trainable LayerNorm-style biases and the dtype choice together.
        var withBias = FineTuning.LoadOptionsFor(Config(bf16, "float32", "bias: all"), bf16);
        Assert.True(withBias.Float32);
        Assert.NotNull(withBias.Trainable);
    }
}
