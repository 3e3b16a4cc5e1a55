using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Peft;

/// <summary>SaveMerged computes each tensor while writing it; the output must be what building every tensor first gives.</summary>
public sealed class SaveMergedLazyTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-merge-lazy-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static PeftModel Wrapped(FakeCausalLM model, string arch, bool dora) => PeftModel.Wrap(model, new LoraConfig
    {
        R = 2, LoraAlpha = 4, InitLoraWeights = "false", UseDora = dora, Bias = arch == "gpt2" ? "lora_only" : "none",
        TargetModules = TargetModules.FromNames(arch == "gpt2" ? ["c_attn", "c_fc"] : ["q_proj", "v_proj", "down_proj"]),
        ModulesToSave = arch == "gpt2" ? ["c_proj"] : ["k_proj"],
    }, rng: new Rng(21));

    [Theory]
    [InlineData("gpt2", DType.F32, false)]
    [InlineData("gpt2", DType.BF16, false)]
    [InlineData("gpt2", DType.F16, false)]
    [InlineData("llama", DType.F32, true)]
    [InlineData("llama", DType.BF16, false)]
    public void WritesTheBytesOfAnEagerlyBuiltFolder(string arch, DType dtype, bool dora)
    {
        var cfg = arch == "gpt2" ? FakeCausalLM.TinyGpt2() : FakeCausalLM.TinyLlama();
        using var model = new FakeCausalLM(cfg, shapeOnly: false, new Rng(20));
        using var peft = Wrapped(model, arch, dora);
        var rng = new Rng(22);
        foreach (var l in peft.LoraLayers)
            if (l.TrainableBias is { } b) rng.FillUniform(b.AsSpan(), -1, 1); // a trained bias differs from the base's
        foreach (var s in model.Linears)
            if (s.Layer is ModulesToSaveLinear m)
            {
                rng.FillUniform(m.Copies[m.ActiveAdapter!].Weight.AsSpan(), -1, 1);
                if (m.Copies[m.ActiveAdapter!].Bias is { } cb) rng.FillUniform(cb.AsSpan(), -1, 1);
            }
        Assert.Contains(model.Linears, s => s.Layer is ModulesToSaveLinear);
        Assert.Contains(peft.LoraLayers, l => l.Info.IsConv1D == (arch == "gpt2"));

        string lazy = Path.Combine(_dir, "lazy"), eager = Path.Combine(_dir, "eager");
        peft.SaveMerged(lazy, dtype);
        SafetensorsShardWriter.Write(eager, EagerEntries(peft, model, dtype));

        Assert.Equal(File.ReadAllBytes(Path.Combine(eager, "model.safetensors")), File.ReadAllBytes(Path.Combine(lazy, "model.safetensors")));
        Assert.Equal(["config.json", "model.safetensors"], Directory.GetFiles(lazy).Select(Path.GetFileName).Order());
        Assert.Equal(dtype == DType.F32 ? "float32" : dtype == DType.BF16 ? "bfloat16" : "float16", ModelConfig.Load(lazy).TorchDtype);
        using var st = SafetensorsFile.Open(Path.Combine(lazy, "model.safetensors"));
        Assert.Equal(ModelSkeleton.FromConfig(cfg).Parameters.Select(p => p.Name).Order(), st.Names.Order());
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void ANonFiniteMergedWeightFailsWithPeftSharpExceptionAndLeavesNoFiles(string arch)
    {
        var cfg = arch == "gpt2" ? FakeCausalLM.TinyGpt2() : FakeCausalLM.TinyLlama();
        using var model = new FakeCausalLM(cfg, shapeOnly: false, new Rng(23));
        using var peft = Wrapped(model, arch, dora: false);
        var broken = peft.LoraLayers.Last();
        broken["default"].B.AsSpan()[1] = float.NaN;

        string fresh = Path.Combine(_dir, "fresh");
        var e = Assert.Throws<PeftSharpException>(() => peft.SaveMerged(fresh, DType.BF16));
        Assert.Contains(broken.Info.Name, e.Message);
        Assert.False(Directory.Exists(fresh)); // created by SaveMerged, removed again

        string existing = Path.Combine(_dir, "existing");
        Directory.CreateDirectory(existing);
        File.WriteAllText(Path.Combine(existing, "README.md"), "keep");
        Assert.Throws<PeftSharpException>(() => peft.SaveMerged(existing, DType.F32));
        Assert.Equal(["README.md"], Directory.EnumerateFileSystemEntries(existing).Select(Path.GetFileName));
    }

    /// <summary>The entries as SaveMerged built them before it wrote lazily: every merged weight materialized first.</summary>
    private static List<SafetensorsEntry> EagerEntries(PeftModel peft, FakeCausalLM model, DType dtype)
    {
        var entries = new List<SafetensorsEntry>();
        var written = new HashSet<string>(StringComparer.Ordinal);
        var slotParams = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var s in model.Linears) slotParams.UnionWith(s.Layer.Parameters);
        foreach (var p in model.Parameters)
            if (!slotParams.Contains(p) && written.Add(p.Name)) entries.Add(Entry(p.Name, p.Shape, p.AsSpan().ToArray(), dtype));
        foreach (var s in model.Linears)
        {
            var info = s.Info;
            float[] w;
            Parameter? bias = s.Base.Bias;
            switch (s.Layer)
            {
                case LoraLinear l:
                    w = l.MergedWeight(l.ActiveAdapters);
                    bias = l.TrainableBias ?? bias;
                    break;
                case ModulesToSaveLinear m:
                    w = m.Copies[m.ActiveAdapter!].Weight.AsSpan().ToArray();
                    bias = m.Copies[m.ActiveAdapter!].Bias;
                    break;
                default:
                    w = ((DenseLinear)s.Base).Weight.AsSpan().ToArray();
                    break;
            }
            string weightName = s.Base.Parameters.First(p => !ReferenceEquals(p, s.Base.Bias)).Name;
            if (written.Add(weightName))
            {
                if (info.IsConv1D)
                {
                    var t = new float[w.Length];
                    for (int i = 0; i < info.OutFeatures; i++)
                        for (int j = 0; j < info.InFeatures; j++) t[j * info.OutFeatures + i] = w[i * info.InFeatures + j];
                    entries.Add(Entry(weightName, [info.InFeatures, info.OutFeatures], t, dtype));
                }
                else entries.Add(Entry(weightName, [info.OutFeatures, info.InFeatures], w, dtype));
            }
            if (bias != null && written.Add(info.Name + ".bias"))
                entries.Add(Entry(info.Name + ".bias", [info.OutFeatures], bias.AsSpan().ToArray(), dtype));
        }
        return entries;
    }

    private static unsafe SafetensorsEntry Entry(string name, int[] shape, float[] values, DType dtype)
    {
        long[] dims = shape.Select(d => (long)d).ToArray();
        if (dtype == DType.F32) return SafetensorsEntry.FromFloat32(name, dims, values);
        var bytes = new byte[values.Length * 2];
        fixed (float* src = values)
        fixed (byte* dst = bytes)
        {
            if (dtype == DType.BF16) Precision.F32ToBf16(src, (ushort*)dst, values.Length);
            else Precision.F32ToF16(src, (Half*)dst, values.Length);
        }
        return SafetensorsEntry.FromBytes(name, dtype, dims, bytes);
    }
}
