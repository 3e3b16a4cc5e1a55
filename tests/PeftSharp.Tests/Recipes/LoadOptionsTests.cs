using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Recipes;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Recipes;

/// <summary>model.dtype as the run config documents it: auto keeps the stored dtype, float32 widens, bfloat16/float16 keep 16 bits.</summary>
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

        var auto = FineTuning.LoadOptionsFor(Config(bf16, "auto"), bf16);
        Assert.False(auto.Float32);
        Assert.Null(auto.Weights16);
        Assert.True(FineTuning.LoadOptionsFor(Config(bf16, "float32"), bf16).Float32);
        Assert.Equal(DType.BF16, FineTuning.LoadOptionsFor(Config(f32, "bfloat16"), f32).Weights16);
        Assert.Equal(DType.F16, FineTuning.LoadOptionsFor(Config(bf16, "float16"), bf16).Weights16);

        // bias "all" keeps its trainable LayerNorm-style biases and the dtype choice together.
        var withBias = FineTuning.LoadOptionsFor(Config(bf16, "float32", "bias: all"), bf16);
        Assert.True(withBias.Float32);
        Assert.NotNull(withBias.Trainable);
    }

    [Fact]
    public void AFullFineTuneIsSavedInTheCheckpointsDtypeUnlessModelDtypeSaysOtherwise()
    {
        string bf16 = Path.Combine(_root, "bf16"), f32 = Path.Combine(_root, "f32");
        ModelInitializer.Write(bf16, new InitModelOptions { Architecture = "gpt2", Dtype = "bfloat16" });
        ModelInitializer.Write(f32, new InitModelOptions { Architecture = "gpt2" });
        Assert.Equal(DType.BF16, FineTuning.SaveDType(Config(bf16, "auto"), bf16));
        Assert.Equal(DType.F32, FineTuning.SaveDType(Config(f32, "auto"), f32));
        Assert.Equal(DType.F32, FineTuning.SaveDType(Config(bf16, "float32"), bf16));
        Assert.Equal(DType.F16, FineTuning.SaveDType(Config(f32, "float16"), f32));
    }
}
