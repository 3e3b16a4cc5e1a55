using System.Runtime.InteropServices;
using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>init-model --dtype: the float32 draws rounded to nearest even and stored as BF16/F16.</summary>
public sealed class InitModelDtypeTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "peftsharp-initdtype-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private string Write(string arch, string preset, string dtype, ulong seed = 5)
    {
        string folder = Path.Combine(_root, $"{arch}-{preset}-{dtype}-{seed}");
        ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, Preset = preset, Seed = seed, Dtype = dtype });
        return folder;
    }

    /// <summary>Round to nearest even by arithmetic on the exact double value: 8 significant bits.</summary>
    private static ushort ReferenceBf16(float x)
    {
        if (x == 0f) return (ushort)(BitConverter.SingleToUInt32Bits(x) >> 16);
        double quantum = Math.ScaleB(1.0, Math.ILogB((double)x) - 7);
        double rounded = Math.Round(x / quantum, MidpointRounding.ToEven) * quantum;
        return (ushort)(BitConverter.SingleToUInt32Bits((float)rounded) >> 16);
    }

    /// <summary>Round to nearest even by arithmetic: 11 significant bits, subnormals below 2^-14 (quantum 2^-24).</summary>
    private static ushort ReferenceF16(float x)
    {
        ushort sign = (ushort)(BitConverter.SingleToUInt32Bits(x) >> 31 << 15);
        double a = Math.Abs((double)x);
        if (a == 0) return sign;
        int e = Math.Max(Math.ILogB(a), -14);
        double m = Math.Round(a / Math.ScaleB(1.0, e - 10), MidpointRounding.ToEven);
        if (m == 2048) { e++; m = 1024; }
        Assert.True(e <= 15, $"{x} overflows float16");
        // Exponent field e + 15 and the implicit leading 1 (m >= 1024) add up to (e + 14) << 10 + m; subnormals: m < 1024 at e = -14.
        return (ushort)(sign | (((e + 14) << 10) + (int)m));
    }

    [Theory]
    [InlineData("llama", "tiny", "bfloat16")]
    [InlineData("gpt2", "tiny", "bfloat16")]
    [InlineData("llama", "small", "bfloat16")] // tensors larger than one conversion chunk
    [InlineData("llama", "tiny", "float16")]
    [InlineData("gpt2", "tiny", "float16")]
    [InlineData("qwen2", "small", "float16")]
    public void StoresTheFloat32DrawsRoundedToNearestEven(string arch, string preset, string dtype)
    {
        string wide = Write(arch, preset, "float32"), narrow = Write(arch, preset, dtype);
        Assert.Equal("float32", ModelConfig.Load(wide).TorchDtype);
        Assert.Equal(dtype, ModelConfig.Load(narrow).TorchDtype);
        var expectedType = dtype == "bfloat16" ? DType.BF16 : DType.F16;
        Func<float, ushort> reference = dtype == "bfloat16" ? ReferenceBf16 : ReferenceF16;

        using var f32 = SafetensorsCheckpoint.Open(wide);
        using var half = SafetensorsCheckpoint.Open(narrow);
        Assert.Equal(f32.Names, half.Names);
        long compared = 0, inexact = 0, subnormal = 0;
        foreach (var t in f32.Tensors)
        {
            var h = half[t.Name];
            Assert.Equal(DType.F32, t.DType);
            Assert.Equal(expectedType, h.DType);
            Assert.Equal(t.Shape, h.Shape);
            var values = t.ToFloat32();
            var bits = MemoryMarshal.Cast<byte, ushort>(h.Bytes);
            Assert.Equal(values.Length, bits.Length);
            for (int i = 0; i < values.Length; i++)
            {
                ushort expected = reference(values[i]);
                if (bits[i] != expected)
                    Assert.Fail($"{t.Name}[{i}] = {values[i]:R}: stored 0x{bits[i]:X4}, round-to-nearest-even gives 0x{expected:X4}");
                float back = dtype == "bfloat16" ? BitConverter.UInt32BitsToSingle((uint)bits[i] << 16) : (float)BitConverter.UInt16BitsToHalf(bits[i]);
                if (back != values[i]) inexact++;
                if (dtype == "float16" && (bits[i] & 0x7C00) == 0 && (bits[i] & 0x3FF) != 0) subnormal++;
            }
            compared += values.Length;
        }
        Assert.Equal(ModelSkeleton.FromConfig(ModelConfig.Load(wide)).ParameterCount, compared);
        // The normal draws really were rounded (not stored exactly), and f16 exercised its subnormal range.
        Assert.True(inexact > compared / 2, $"{inexact} of {compared} values changed by rounding");
        if (dtype == "float16") Assert.True(subnormal > 0, "no f16 subnormal among the draws");
    }

    [Fact]
    public void AliasesNameTheSameDtypeAndFloat32IsUnchanged()
    {
        string bf16 = Write("qwen2", "tiny", "bfloat16"), alias = Write("qwen2", "tiny", "BF16");
        Assert.Equal(File.ReadAllBytes(Path.Combine(bf16, "model.safetensors")), File.ReadAllBytes(Path.Combine(alias, "model.safetensors")));
        Assert.Equal("bfloat16", ModelConfig.Load(alias).TorchDtype);
        Assert.Equal(("float16", DType.F16), ModelInitializer.ParseDtype("fp16"));
        Assert.Equal(("float16", DType.F16), ModelInitializer.ParseDtype("f16"));
        Assert.Equal(("float32", DType.F32), ModelInitializer.ParseDtype("fp32"));
        Assert.Equal(("float32", DType.F32), ModelInitializer.ParseDtype("f32"));

        // The default path is the plain float32 writer over the same draws: same bytes as an explicit fp32.
        string byDefault = Path.Combine(_root, "default");
        ModelInitializer.Write(byDefault, new InitModelOptions { Architecture = "qwen2", Seed = 5 });
        Assert.Equal(File.ReadAllBytes(Path.Combine(byDefault, "model.safetensors")), File.ReadAllBytes(Path.Combine(Write("qwen2", "tiny", "fp32"), "model.safetensors")));
        var skeleton = ModelSkeleton.FromConfig(ModelConfig.Load(byDefault));
        Assert.Equal(8 + skeleton.ParameterCount * 4, new FileInfo(Path.Combine(byDefault, "model.safetensors")).Length - HeaderLength(byDefault));
        Assert.Equal(8 + skeleton.ParameterCount * 2, new FileInfo(Path.Combine(bf16, "model.safetensors")).Length - HeaderLength(bf16));
    }

    private static long HeaderLength(string folder)
    {
        using var stream = File.OpenRead(Path.Combine(folder, "model.safetensors"));
        var length = new byte[8];
        stream.ReadExactly(length);
        return (long)BitConverter.ToUInt64(length);
    }

    [Theory]
    [InlineData("bfloat16x")]
    [InlineData("int8")]
    [InlineData("")]
    public void RejectsUnknownDtypesNamingTheOption(string dtype)
    {
        var e = Assert.Throws<PeftSharpException>(() => Write("llama", "tiny", dtype));
        Assert.Contains("--dtype", e.Message);
        Assert.Contains($"'{dtype}'", e.Message);
        Assert.Contains("float32, bfloat16, float16", e.Message);
        Assert.False(Directory.Exists(Path.Combine(_root, $"llama-tiny-{dtype}-5")));
    }

    [Theory]
    [InlineData("llama", "bfloat16")] // untied head
    [InlineData("qwen2", "bfloat16")] // tied head, q/k/v biases
    [InlineData("gpt2", "bfloat16")]
    [InlineData("llama", "float16")]
    public void HalfFolderLoadsAsViewsAndWidenedToTheSameLogits(string arch, string dtype)
    {
        string folder = Write(arch, "tiny", dtype);
        using var views = CausalLM.Load(folder);
        using var widened = CausalLM.Load(folder, new LoadOptions { Float32 = true });
        using var unrounded = CausalLM.Load(Write(arch, "tiny", "float32"));
        if (arch != "gpt2")
        {
            Assert.All(views.Linears, s => Assert.IsType<HalfLinear>(s.Layer));
            Assert.Null(views.FindParameter("model.embed_tokens.weight"));
        }
        Assert.All(widened.Linears, s => Assert.IsType<DenseLinear>(s.Layer));

        var ids = new[] { 5, 17, 300, 42, 9, 611, 77, 128, 3, 250, 64, 1 };
        var batch = new TokenBatch(2, 6, ids);
        float[] Logits(CausalLM model)
        {
            using var tape = new Tape { GradEnabled = false };
            return model.Forward(new Ops(tape), batch).AsSpan().ToArray();
        }
        float[] a = Logits(views), b = Logits(widened), c = Logits(unrounded);
        Assert.Equal(2 * 6 * views.VocabSize, a.Length);
        Assert.True(ModelGolden.MaxAbsDiff(a, b) <= 1e-4f, $"views vs widened: {ModelGolden.MaxAbsDiff(a, b)}");
        // The rounding is visible in the logits, yet small next to their spread.
        float rounding = ModelGolden.MaxAbsDiff(b, c), spread = c.Max() - c.Min();
        Assert.True(rounding > 0f && rounding < spread / 20, $"rounded vs float32 weights: {rounding}, logit spread {spread}");
    }
}
