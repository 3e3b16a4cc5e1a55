using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using static PeftSharp.Tests.Kernels.GradCheck;
using PeftSharp.Kernels;

namespace PeftSharp.Tests.Quantization;

public unsafe class Linear4BitTests
{
    private static readonly BitsAndBytesConfig Nf4Double = new()
    {
        LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitBlockSize = 32,
    };

    private static Linear4Bit Make(LinearModuleInfo info, BitsAndBytesConfig config, int seed, out float[] bias)
    {
        var w = Gaussian.Sample(info.OutFeatures * info.InFeatures, seed);
        bias = Gaussian.Sample(info.OutFeatures, seed + 1);
        fixed (float* pw = w, pb = bias) return Linear4Bit.Quantize(info, pw, DType.F32, info.HasBias ? pb : null, config);
    }

    private static double[] Dequantized(Linear4Bit layer)
    {
        var w = new float[layer.Info.OutFeatures * layer.Info.InFeatures];
        fixed (float* p = w) layer.ReadWeight(p);
        return D(w);
    }

    /// <summary>y = x·Wᵀ (+ b) in double: x (rows × k), W (n × k).</summary>
    private static double[] LinearD(double[] x, double[] w, double[]? b, int k, int n)
    {
        int rows = x.Length / k;
        var y = new double[rows * n];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n; j++)
            {
                double s = b?[j] ?? 0;
                for (int p = 0; p < k; p++) s += x[i * k + p] * w[j * k + p];
                y[i * n + j] = s;
            }
        return y;
    }

    [Fact]
    public void GradientsThroughA4BitBaseWithALoraAdapterMatchFiniteDifferences()
    {
        const int rows = 3, k = 37, n = 11, rank = 2;
        const float scaling = 1.5f;
        var info = new LinearModuleInfo("model.layers.0.mlp.up_proj", k, n, HasBias: true);
        using var layer = Make(info, Nf4Double, 11, out _);
        var rng = new Rng(5);
        using var x = Parameter.Create("x", [rows, k], requiresGrad: true);
        using var a = Parameter.Create("lora_A", [rank, k], requiresGrad: true);
        using var bLora = Parameter.Create("lora_B", [n, rank], requiresGrad: true);
        using var r = Parameter.Create("r", [1, rows * n], requiresGrad: false);
        rng.FillNormal(x.AsSpan(), 0f, 1f);
        rng.FillNormal(a.AsSpan(), 0f, 0.5f);
        rng.FillNormal(bLora.AsSpan(), 0f, 0.5f);
        rng.FillNormal(r.AsSpan(), 0f, 1f);

        using var tape = new Tape(1 << 14);
        var ops = new Ops(tape);
        var y = ops.Add(layer.Forward(ops, x), ops.Scale(ops.Linear(ops.Linear(x, a), bLora), scaling));
        tape.Backward(ops.Linear(Ops.Reshape(y, 1, rows * n), r));

        var w = Dequantized(layer);
        var bias = D(layer.Bias!.AsSpan().ToArray());
        float[] xv = x.AsSpan().ToArray(), av = a.AsSpan().ToArray(), bv = bLora.AsSpan().ToArray(), rv = r.AsSpan().ToArray();
        double[] Model(double[] xd, double[] ad, double[] bd)
        {
            var baseOut = LinearD(xd, w, bias, k, n);
            var lora = LinearD(LinearD(xd, ad, null, k, rank), bd, null, rank, n);
            for (int i = 0; i < baseOut.Length; i++) baseOut[i] += scaling * lora[i];
            return baseOut;
        }
        AssertClose(Numeric(v => Model(v, D(av), D(bv)), xv, rv), x.GradSpan().ToArray(), 2e-4, "dx");
        AssertClose(Numeric(v => Model(D(xv), v, D(bv)), av, rv), a.GradSpan().ToArray(), 2e-4, "dA");
        AssertClose(Numeric(v => Model(D(xv), D(av), v), bv, rv), bLora.GradSpan().ToArray(), 2e-4, "dB");
        Assert.Equal(Model(D(xv), D(av), D(bv)).Select(v => (float)v).ToArray(), y.AsSpan().ToArray(), new FloatTolerance(1e-4f));
    }

    [Fact]
    public void FrozenInputRecordsNoBackward()
    {
        var info = new LinearModuleInfo("q_proj", 64, 8, HasBias: false);
        using var layer = Make(info, Nf4Double, 3, out _);
        using var x = Parameter.Create("x", [2, 64], requiresGrad: false);
        using var tape = new Tape(1 << 12);
        var y = layer.Forward(new Ops(tape), x);
        Assert.False(y.RequiresGrad);
        Assert.Equal(0, tape.NodeCount);
        Assert.Empty(layer.Parameters);
    }

    [Fact]
    public void ReadWeightIsTheExactDequantizationAndMergingNeverRequantizes()
    {
        var info = new LinearModuleInfo("c_fc", 70, 9, HasBias: true);
        using var layer = Make(info, new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "fp4" }, 21, out var bias);
        var expected = new float[70 * 9];
        layer.Weight.Dequantize(expected);
        var read = new float[70 * 9];
        fixed (float* p = read) layer.ReadWeight(p);
        Assert.Equal(expected, read);
        Assert.False(layer.CanModifyWeight);
        Assert.Equal(bias, layer.Bias!.AsSpan().ToArray());

        var before = layer.Weight.Packed.Span.ToArray();
        var delta = Gaussian.Sample(70 * 9, 4, 0.01f);
        fixed (float* pd = delta)
        {
            float* d = pd;
            Assert.Throws<InvalidOperationException>(() => layer.AddToWeight(d, 1f));
            using var merged = layer.DequantizeWithDelta(pd, 0.5f);
            for (int i = 0; i < delta.Length; i++) Assert.Equal(expected[i] + 0.5f * delta[i], merged.Span[i], 1e-6f);
            using var dense = layer.ToDense(pd, 0.5f);
            Assert.Equal(merged.Span.ToArray(), dense.Weight.AsSpan().ToArray());
            Assert.Equal(bias, dense.Bias!.AsSpan().ToArray());
        }
        Assert.Equal(before, layer.Weight.Packed.Span.ToArray());
    }

    [Theory]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void QuantizingHalfSourcesEqualsQuantizingTheirF32Values(DType dtype)
    {
        var info = new LinearModuleInfo("o_proj", 40, 6, HasBias: false);
        var w = Gaussian.Sample(240, 8);
        var bits = new ushort[240];
        var widened = new float[240];
        for (int i = 0; i < w.Length; i++)
        {
            bits[i] = dtype == DType.BF16 ? PeftSharp.Kernels.Precision.F32ToBf16(w[i]) : BitConverter.HalfToUInt16Bits((Half)w[i]);
            widened[i] = dtype == DType.BF16 ? PeftSharp.Kernels.Precision.Bf16ToF32(bits[i]) : (float)BitConverter.UInt16BitsToHalf(bits[i]);
        }
        var config = new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitComputeDtype = "bfloat16" };
        fixed (ushort* pb = bits)
        fixed (float* pw = widened)
        {
            using var fromHalf = Linear4Bit.Quantize(info, pb, dtype, null, config);
            using var fromF32 = Linear4Bit.Quantize(info, pw, DType.F32, null, config);
            Assert.Equal(fromF32.Weight.Packed.Span.ToArray(), fromHalf.Weight.Packed.Span.ToArray());
            Assert.Equal(fromF32.Weight.State.Absmax!, fromHalf.Weight.State.Absmax!);
            Assert.Equal(dtype, fromHalf.Weight.State.DType);
            Assert.Equal(DType.BF16, fromHalf.ComputeType);
        }
    }

    [Fact]
    public void RejectsAMismatchedShape()
    {
        using var q = Quantized4BitTensor.Quantize(new float[12], [3, 4], QuantType.Nf4);
        var e = Assert.Throws<PeftSharpException>(() => new Linear4Bit(new LinearModuleInfo("k_proj", 3, 4, false), q, null));
        Assert.Contains("k_proj", e.Message);
    }

    private sealed class FloatTolerance(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float x, float y) => Math.Abs(x - y) <= tolerance * Math.Max(1f, Math.Abs(x));
        public int GetHashCode(float obj) => 0;
    }
}
