using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Quantization;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Peft;

/// <summary>
/// Saving a model loaded from a bf16 checkpoint, whose embedding and frozen linears are views of the file: every
/// tensor of the checkpoint comes back, under its own name (a tied output layer is the embedding, not lm_head).
/// </summary>
public sealed class MergeHalfCheckpointTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-merge-half-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Bf16Folder(string arch)
    {
        string folder = Path.Combine(_dir, arch);
        ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, Dtype = "bfloat16", Seed = 4 });
        return folder;
    }

    [Theory]
    [InlineData("qwen2")]   // tied embedding: the output layer is the embedding's view
    [InlineData("llama")]   // untied: the embedding view is outside every linear slot
    [InlineData("gpt2")]    // Conv1D weights are widened and transposed on load, transposed back on save
    public void ABf16ModelSavedAsBf16IsItsCheckpointTensorForTensor(string arch)
    {
        string folder = Bf16Folder(arch), output = Path.Combine(_dir, arch + "-saved");
        using (var model = CausalLM.Load(folder))
        {
            Assert.NotEmpty(model.HalfWeights);
            PeftModel.SaveModel(model, output, DType.BF16);
        }
        using var source = SafetensorsFile.Open(Path.Combine(folder, "model.safetensors"));
        using var saved = SafetensorsFile.Open(Path.Combine(output, "model.safetensors"));
        Assert.Equal(source.Tensors.Select(t => t.Name).Order(), saved.Tensors.Select(t => t.Name).Order());
        foreach (var t in source.Tensors)
        {
            Assert.Equal(t.Shape, saved[t.Name].Shape);
            Assert.True(t.Bytes.SequenceEqual(saved[t.Name].Bytes), $"{t.Name} differs");
        }
    }

    [Theory]
    [InlineData("qwen2")]
    [InlineData("llama")]
    public void AMergedAdapterOnViewsEqualsTheMergeOnAWidenedCopy(string arch)
    {
        string folder = Bf16Folder(arch);
        var config = new LoraConfig { R = 4, LoraAlpha = 8, InitLoraWeights = "false", TargetModules = TargetModules.FromNames(["q_proj", "v_proj", "up_proj"]) };
        string Merge(LoadOptions options, string name)
        {
            string output = Path.Combine(_dir, name);
            using var model = CausalLM.Load(folder, options);
            using var peft = PeftModel.Wrap(model, config, rng: new Rng(9));
            peft.SaveMerged(output, DType.F32);
            return Path.Combine(output, "model.safetensors");
        }
        using var views = SafetensorsFile.Open(Merge(new LoadOptions(), arch + "-views"));
        using var widened = SafetensorsFile.Open(Merge(new LoadOptions { Float32 = true }, arch + "-widened"));
        Assert.Equal(widened.Tensors.Select(t => t.Name).Order(), views.Tensors.Select(t => t.Name).Order());
        foreach (var t in widened.Tensors)
            Assert.Equal(t.ToFloat32(), views[t.Name].ToFloat32());
        Assert.Contains(views.Tensors, t => t.Name.EndsWith("embed_tokens.weight", StringComparison.Ordinal));
    }

    [Fact]
    public void MergingIntoA4BitBaseWritesADenseModelWithoutQuantizationConfigAndSaysSo()
    {
        string folder = Bf16Folder("llama"), quantized = Path.Combine(_dir, "llama-nf4"), output = Path.Combine(_dir, "llama-merged");
        QuantizedCheckpoint.Write(folder, quantized, new BitsAndBytesConfig
        {
            LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitComputeDtype = "float32",
        });
        var batch = new TokenBatch(1, 6, [3, 17, 5, 40, 2, 9]);
        float[] adapted;
        IReadOnlyList<string> notices;
        using (var model = QuantizedModel.Load(quantized))
        {
            Assert.Contains(model.Linears, s => s.Layer is Linear4Bit);
            using var peft = PeftModel.Wrap(model, new LoraConfig
            {
                R = 4, LoraAlpha = 8, InitLoraWeights = "false", TargetModules = TargetModules.FromNames(["q_proj", "v_proj", "up_proj"]),
            }, rng: new Rng(3));
            using var tape = new Tape { GradEnabled = false };
            adapted = model.Forward(new Ops(tape), batch).AsSpan().ToArray();
            notices = peft.SaveMerged(output, DType.F32);
        }
        Assert.Contains(notices, n => n.Contains("4-bit") && n.Contains("dequantized"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!.AsObject();
        Assert.False(config.ContainsKey("quantization_config"));
        Assert.Equal("float32", (string?)config["torch_dtype"]);
        using (var saved = SafetensorsFile.Open(Path.Combine(output, "model.safetensors")))
        using (var source = SafetensorsFile.Open(Path.Combine(folder, "model.safetensors")))
            Assert.Equal(source.Tensors.Select(t => t.Name).Order(), saved.Tensors.Select(t => t.Name).Order());
        // The dense merged model computes what the 4-bit base with its adapter computed.
        using var merged = QuantizedModel.Load(output);
        Assert.DoesNotContain(merged.Linears, s => s.Layer is Linear4Bit);
        using var check = new Tape { GradEnabled = false };
        var dense = merged.Forward(new Ops(check), batch).AsSpan().ToArray();
        Assert.True(Models.ModelGolden.MaxAbsDiff(adapted, dense) < 1e-4f, $"max logit difference {Models.ModelGolden.MaxAbsDiff(adapted, dense)}");
    }
}
