using PeftSharp.Autograd;
using PeftSharp.Cli.Commands;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using Xunit;

namespace PeftSharp.Tests.Peft;

public sealed class MergeTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "peftsharp-merge-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static PeftModel Wrapped(FakeCausalLM model, bool dora, string targets = "all-linear") =>
        PeftModel.Wrap(model, new LoraConfig
        {
            R = 3, LoraAlpha = 6, InitLoraWeights = "false", UseDora = dora,
            TargetModules = targets == "all-linear" ? TargetModules.AllLinear : TargetModules.FromNames(targets.Split(',')),
        }, rng: new Rng(11));

    private static float[] Out(ILinearLayer layer, Parameter x)
    {
        using var tape = new Tape { Training = false, GradEnabled = false };
        return layer.Forward(new Ops(tape), x).AsSpan().ToArray();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MergedEqualsUnmerged_AndUnmergeRestoresTheBase(bool dora)
    {
        using var model = new FakeCausalLM(FakeCausalLM.TinyLlama(), shapeOnly: false, new Rng(1));
        var originals = model.Linears.Select(s => ((DenseLinear)s.Base).Weight.AsSpan().ToArray()).ToList();
        using var peft = Wrapped(model, dora);
        var rng = new Rng(2);
        foreach (var l in peft.LoraLayers)
        {
            using var x = Parameter.Create("x", [4, l.Info.InFeatures], false);
            rng.FillUniform(x.AsSpan(), -1, 1);
            var unmerged = Out(l, x);
            l.Merge();
            Assert.True(l.Merged);
            var merged = Out(l, x);
            double scale = unmerged.Max(v => Math.Abs(v));
            for (int i = 0; i < merged.Length; i++) Assert.True(Math.Abs(merged[i] - unmerged[i]) <= 1e-5 * scale + 1e-6, $"{l.Info.Name}[{i}]: {merged[i]} vs {unmerged[i]}");
            l.Unmerge();
            Assert.Equal(unmerged.Length, Out(l, x).Length);
        }
        for (int s = 0; s < model.Linears.Count; s++)
        {
            if (model.Linears[s].Layer is not LoraLinear) continue;
            var now = ((DenseLinear)model.Linears[s].Base).Weight.AsSpan().ToArray();
            for (int i = 0; i < now.Length; i++) Assert.Equal(originals[s][i], now[i], 1e-5f);
        }
    }

    [Fact]
    public void Merge_RefusesNonFiniteWeightsNamingTheModule()
    {
        using var model = new FakeCausalLM(FakeCausalLM.TinyLlama(), shapeOnly: false, new Rng(3));
        using var peft = Wrapped(model, dora: false, "q_proj");
        var layer = peft.LoraLayers.First();
        layer["default"].A.AsSpan()[0] = float.NaN;
        var e = Assert.Throws<PeftSharpException>(() => layer.Merge());
        Assert.Contains(layer.Info.Name, e.Message);
        Assert.False(layer.Merged);
    }

    [Fact]
    public unsafe void SaveMerged_WritesAPlainGpt2FolderWithConv1DLayout()
    {
        var cfg = FakeCausalLM.TinyGpt2();
        using var model = new FakeCausalLM(cfg, shapeOnly: false, new Rng(4));
        using var peft = Wrapped(model, dora: false, "c_attn");
        var lora = peft.LoraLayers.First();
        var expected = lora.MergedWeight(["default"]);
        peft.SaveMerged(_dir, DType.F32);
        using var st = SafetensorsFile.Open(Path.Combine(_dir, "model.safetensors"));
        var skeleton = ModelSkeleton.FromConfig(cfg);
        Assert.Equal(skeleton.Parameters.Select(p => p.Name).Order(), st.Names.Order());
        var t = st[lora.Info.Name + ".weight"];
        Assert.Equal([8L, 24L], t.Shape);
        var stored = t.ToFloat32();
        for (int o = 0; o < 24; o++)
            for (int i = 0; i < 8; i++) Assert.Equal(expected[o * 8 + i], stored[i * 24 + o]);
        Assert.Equal("float32", PeftSharp.Formats.HfConfig.ModelConfig.Load(_dir).TorchDtype);

        var bf16 = Path.Combine(_dir, "bf16");
        peft.SaveMerged(bf16, DType.BF16);
        using var st16 = SafetensorsFile.Open(Path.Combine(bf16, "model.safetensors"));
        Assert.Equal(DType.BF16, st16[lora.Info.Name + ".weight"].DType);
        var widened = st16[lora.Info.Name + ".weight"].ToFloat32();
        for (int k = 0; k < stored.Length; k++) Assert.Equal(stored[k], widened[k], Math.Abs(stored[k]) / 128 + 1e-6f);
    }

    [Fact]
    public void MergeAndUnload_GivesThePlainModelWithMergedWeights()
    {
        using var model = new FakeCausalLM(FakeCausalLM.TinyLlama(), shapeOnly: false, new Rng(5));
        var peft = Wrapped(model, dora: true, "v_proj");
        var lora = peft.LoraLayers.First();
        var expected = lora.MergedWeight(["default"]);
        var slot = model.Linears.First(s => s.Name == lora.Info.Name);
        var plain = peft.MergeAndUnload();
        Assert.All(plain.Linears, s => Assert.IsType<DenseLinear>(s.Layer));
        var now = ((DenseLinear)slot.Layer).Weight.AsSpan().ToArray();
        for (int i = 0; i < now.Length; i++) Assert.Equal(expected[i], now[i], 1e-5f);
    }

    [Fact]
    public void MergeCommand_LoadsThroughTheLoaderAndWritesTheFolder()
    {
        var cfg = FakeCausalLM.TinyLlama();
        var adapterDir = Path.Combine(_dir, "adapter");
        float[] expected;
        using (var model = new FakeCausalLM(cfg, shapeOnly: false, new Rng(6)))
        using (var peft = Wrapped(model, dora: false, "q_proj,v_proj"))
        {
            peft.SaveAdapter(adapterDir);
            expected = peft.LoraLayers.First().MergedWeight(["default"]);
        }
        var output = new StringWriter();
        var outDir = Path.Combine(_dir, "merged");
        MergeCommand.Run("base-dir", adapterDir, outDir, "f32", _ => new FakeCausalLM(cfg, shapeOnly: false, new Rng(6)), output);
        Assert.Contains("4 LoRA modules", output.ToString());
        using var st = SafetensorsFile.Open(Path.Combine(outDir, "model.safetensors"));
        Assert.Equal(expected, st["model.layers.0.self_attn.q_proj.weight"].ToFloat32());
        Assert.Throws<PeftSharpException>(() => MergeCommand.ParseDType("int8"));
    }

    [Fact]
    public void InspectCommand_PrintsPeftsLineAndTheModules()
    {
        var output = new StringWriter();
        string config = Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "configs", "distilgpt2.json");
        InspectCommand.Run(config, "c_attn", 8, listModules: true, output);
        var text = output.ToString();
        Assert.Contains("trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797", text);
        Assert.Contains("c_attn: 6 modules (attn.c_attn ×6)", text);
        Assert.Contains("transformer.h.5.mlp.c_proj [768, 3072] +bias Conv1D", text);
        Assert.Contains("lm_head [50257, 768]", text);
    }
}
