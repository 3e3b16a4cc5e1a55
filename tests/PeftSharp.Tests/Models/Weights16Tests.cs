using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>LoadOptions.Weights16 (model.dtype: bfloat16): an f32 checkpoint's frozen matrices rounded to 16 bits on load.</summary>
public sealed class Weights16Tests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-weights16").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Folder(string arch, string dtype)
    {
        string folder = Path.Combine(_root, arch + "-" + dtype);
        if (!Directory.Exists(folder)) ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, Seed = 5, Dtype = dtype });
        return folder;
    }

    private static readonly TokenBatch Batch = new(2, 6, [3, 17, 5, 40, 2, 9, 11, 4, 8, 30, 1, 6]);

    private static float[] Logits(CausalLM model)
    {
        using var tape = new Tape { GradEnabled = false };
        return model.Forward(new Ops(tape), Batch).AsSpan().ToArray();
    }

    [Theory]
    [InlineData("llama", "bfloat16")]
    [InlineData("qwen2", "bfloat16")]
    [InlineData("llama", "float16")]
    public void RoundingOnLoadEqualsACheckpointStoredIn16Bits(string arch, string dtype)
    {
        var type = dtype == "bfloat16" ? DType.BF16 : DType.F16;
        using var converted = CausalLM.Load(Folder(arch, "float32"), new LoadOptions { Weights16 = type });
        using var stored = CausalLM.Load(Folder(arch, dtype));
        Assert.All(converted.Linears, s => Assert.Equal(type, Assert.IsType<HalfLinear>(s.Layer).Weight.DType));
        Assert.NotEmpty(converted.HalfWeights);
        Assert.Equal(Logits(stored), Logits(converted));
    }

    [Fact]
    public void Gpt2Conv1DWeightsAreTransposedIntoTheir16BitCopy()
    {
        using var converted = CausalLM.Load(Folder("gpt2", "float32"), new LoadOptions { Weights16 = DType.BF16 });
        using var widened = CausalLM.Load(Folder("gpt2", "bfloat16"), new LoadOptions { Float32 = true });
        Assert.All(converted.Linears, s => Assert.IsType<HalfLinear>(s.Layer));
        // Every matrix holds the same bf16 values; only wpe (f32 here, bf16-rounded in the bf16 folder) differs a little.
        var a = Logits(converted);
        var b = Logits(widened);
        Assert.True(ModelGolden.MaxAbsDiff(a, b) < 2e-2f, $"max logit difference {ModelGolden.MaxAbsDiff(a, b)}");
        foreach (var slot in converted.Linears.Where(s => !s.Info.IsOutputLayer))
            Assert.Equal(Read(widened.Slot(slot.Name).Base), Read(slot.Base));
    }

    private static unsafe float[] Read(IBaseLinear layer)
    {
        var w = new float[layer.Info.OutFeatures * layer.Info.InFeatures];
        fixed (float* p = w) layer.ReadWeight(p);
        return w;
    }

    [Fact]
    public void ConvertedWeightsTrainAdaptersAndSaveBackUnderTheirNames()
    {
        string folder = Folder("llama", "float32"), output = Path.Combine(_root, "saved");
        using var model = CausalLM.Load(folder, new LoadOptions { Weights16 = DType.BF16 });
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames(["q_proj", "v_proj"]) }, rng: new Rng(2));
        using (var tape = new Tape())
        {
            tape.Backward(model.Loss(new Ops(tape), Batch));
            Assert.Contains(peft.TrainableParameters.Single(p => p.Name.Contains("layers.0.self_attn.q_proj.lora_B")).GradSpan().ToArray(), v => v != 0f);
        }
        PeftModel.SaveModel(model, output, DType.BF16);
        using var saved = PeftSharp.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(output, "model.safetensors"));
        using var source = PeftSharp.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(folder, "model.safetensors"));
        Assert.Equal(source.Tensors.Select(t => t.Name).Order(), saved.Tensors.Select(t => t.Name).Order());
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]  // tied: the shared embedding copy must outlive the quantized layers
    public void QuantizingRoundedCopiesFreesThemAndEqualsQuantizingA16BitCheckpoint(string arch)
    {
        var bnb = new PeftSharp.Quantization.BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true };
        using var converted = CausalLM.Load(Folder(arch, "float32"), new LoadOptions { Weights16 = DType.BF16 });
        using var stored = CausalLM.Load(Folder(arch, "bfloat16"));
        var copies = converted.Linears.Where(s => !s.Info.IsOutputLayer).Select(s => ((HalfLinear)s.Layer).Weight).ToList();
        PeftSharp.Quantization.QuantizedModel.QuantizeLinears(converted, bnb);
        PeftSharp.Quantization.QuantizedModel.QuantizeLinears(stored, bnb);
        Assert.All(converted.Linears.Where(s => !s.Info.IsOutputLayer), s => Assert.IsType<PeftSharp.Quantization.Linear4Bit>(s.Layer));
        Assert.Equal(Logits(stored), Logits(converted));
        // The replaced layers' bf16 copies are freed at once; the embedding's (shared with a tied head) is not.
        Assert.NotEmpty(copies);
        Assert.All(copies, w => Assert.Throws<ObjectDisposedException>(() => ((NativeBuffer<ushort>)w.Owner!).Span.Length));
        Assert.All(converted.HalfWeights, w => Assert.True(((NativeBuffer<ushort>)w.Owner!).Span.Length > 0));
    }
}
