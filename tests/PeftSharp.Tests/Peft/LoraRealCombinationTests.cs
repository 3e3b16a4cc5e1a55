using System.Runtime.InteropServices;
using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Peft;

/// <summary>
/// LoRA's gradients in the combinations people train with, by central differences in double: dropout on the
/// adapter's input (the mask replayed from the stream's key, as the trainer keys it), DoRA with dropout, and
/// LoRA over a 4-bit (NF4, double-quantized) and over a bf16 base.
/// </summary>
public sealed unsafe class LoraRealCombinationTests
{
    private const int T = 5, In = 7, Out = 6, R = 3;
    private const float P = 0.3f;
    private const ulong Key = 0xC0FFEE;

    private static LinearModuleInfo Info(bool bias = true) => new("layers.0.proj", In, Out, bias);

    private static float[] Uniform(Rng rng, int n, float scale)
    {
        var a = new float[n];
        rng.FillUniform(a, -scale, scale);
        return a;
    }

    /// <summary>The dropout mask the adapter draws after Reseed(Key): the stream "module/adapter" from the folded key.</summary>
    private static double[] Mask(string adapter, int n)
    {
        var rng = new Rng(0);
        rng.Reset(Rng.FoldIn(Key, Rng.StreamId(Info().Name + "/" + adapter)));
        var mask = new float[n];
        fixed (float* m = mask) Activations.DropoutMask(rng, P, m, n);
        return mask.Select(v => (double)v).ToArray();
    }

    /// <summary>Forward and backward of Σ w·y in training mode after reseeding; returns y.</summary>
    private static float[] Backward(LoraLinear layer, Parameter x, double[] w)
    {
        layer.Reseed(Key);
        using var tape = new Tape { Training = true };
        var ops = new Ops(tape);
        var y = layer.Forward(ops, x);
        using var weights = Parameter.Create("w", [1, T * Out], false);
        for (int i = 0; i < w.Length; i++) weights.Data[i] = (float)w[i];
        tape.Backward(ops.Linear(Ops.Reshape(y, 1, T * Out), weights));
        return y.AsSpan().ToArray();
    }

    /// <summary>y = x·Wᵀ + b + (g − 1)·(xd·Wᵀ) + g·s·(xd·Aᵀ·Bᵀ) with xd = mask ⊙ x (g = 1, no base re-run, for plain LoRA), as PEFT computes both.</summary>
    private static double[] ReferenceForward(double[] w, double[]? bias, double s, double[] a, double[] b, double[]? m, double[]? norm, double[] x, double[] mask)
    {
        int rows = x.Length / In;
        var xd = x.Select((v, i) => v * mask[i]).ToArray();
        var baseOut = Reference.MatMulT(x, w, rows, Out, In);
        var droppedBase = Reference.MatMulT(xd, w, rows, Out, In);
        var lora = Reference.MatMulT(xd, Reference.BA(a, b, Out, R, In), rows, Out, In);
        var y = new double[rows * Out];
        for (int i = 0; i < y.Length; i++)
        {
            int c = i % Out;
            double g = m == null ? 1 : m[c] / norm![c];
            y[i] = baseOut[i] + (bias?[c] ?? 0) + (g - 1) * droppedBase[i] + g * s * lora[i];
        }
        return y;
    }

    private static double[] Norm(double[] w, double s, double[] a, double[] b)
    {
        var ba = Reference.BA(a, b, Out, R, In);
        return Enumerable.Range(0, Out).Select(i => Math.Sqrt(Enumerable.Range(0, In).Sum(j => Math.Pow(w[i * In + j] + s * ba[i * In + j], 2)))).ToArray();
    }

    /// <summary>Checks dA, dB (dm with DoRA) and dx of a LoRA layer over <paramref name="baseLayer"/> whose weights in double are <paramref name="w"/>.</summary>
    private static void CheckLayer(IBaseLinear baseLayer, double[] w, double[]? bias, bool dora, int seed, double tolerance = 2e-4)
    {
        var rng = new Rng((ulong)seed);
        using var x = Parameter.Create("x", [T, In], true);
        rng.FillUniform(x.AsSpan(), -1f, 1f);
        using var lora = new LoraLinear(baseLayer);
        var ad = lora.AddAdapter("default", R, 1.7, P, "false", dora, true, rng);
        lora.SetActiveAdapters(["default"]);
        if (dora) for (int i = 0; i < Out; i++) ad.Magnitude!.Data[i] *= 1f + 0.1f * (i + 1);
        var wLoss = Enumerable.Range(0, T * Out).Select(_ => rng.NextDouble() - 0.5).ToArray();
        var y = Backward(lora, x, wLoss);
        var mask = Mask("default", T * In);
        Assert.Contains(0.0, mask); // dropout really dropped something
        double[] xd = Reference.D(x), a = Reference.D(ad.A), b = Reference.D(ad.B), m = dora ? Reference.D(ad.Magnitude!) : [];
        var norm = dora ? Norm(w, ad.Scaling, a, b) : null; // detached, as PEFT does
        double[] Forward() => ReferenceForward(w, bias, ad.Scaling, a, b, dora ? m : null, norm, xd, mask);
        var expected = Forward();
        for (int i = 0; i < y.Length; i++) Assert.True(Math.Abs(expected[i] - y[i]) < 1e-4, $"y[{i}]: {expected[i]} vs {y[i]}");
        double Loss() => Reference.Dot(Forward(), wLoss);
        Reference.CheckGradient(a, ad.A.GradSpan().ToArray(), Loss, "dA");
        Reference.CheckGradient(b, ad.B.GradSpan().ToArray(), Loss, "dB");
        if (dora) Reference.CheckGradient(m, ad.Magnitude!.GradSpan().ToArray(), Loss, "dm");
        Reference.CheckGradient(xd, x.GradSpan().ToArray(), Loss, "dx");
    }

    private static (DenseLinear Layer, double[] W, double[] Bias) Dense(int seed)
    {
        var rng = new Rng((ulong)seed);
        var layer = DenseLinear.Create(Info(), trainable: false);
        rng.FillUniform(layer.Weight.AsSpan(), -0.5f, 0.5f);
        rng.FillUniform(layer.Bias!.AsSpan(), -0.5f, 0.5f);
        return (layer, Reference.D(layer.Weight), Reference.D(layer.Bias));
    }

    [Fact]
    public void LoraWithDropoutMatchesFiniteDifferencesWithTheReplayedMask()
    {
        var (layer, w, bias) = Dense(11);
        using (layer) CheckLayer(layer, w, bias, dora: false, seed: 12);
    }

    [Fact]
    public void DoraWithDropoutMatchesFiniteDifferencesWithTheReplayedMask()
    {
        var (layer, w, bias) = Dense(13);
        using (layer) CheckLayer(layer, w, bias, dora: true, seed: 14);
    }

    [Fact]
    public void LoraWithDropoutOverA4BitBaseMatchesFiniteDifferences()
    {
        var rng = new Rng(15);
        var weight = Uniform(rng, Out * In, 0.5f);
        var biasValues = Uniform(rng, Out, 0.5f);
        var config = new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true };
        Linear4Bit layer;
        fixed (float* wp = weight)
        fixed (float* bp = biasValues)
            layer = Linear4Bit.Quantize(Info(), wp, DType.F32, bp, config);
        using (layer)
        {
            var dequantized = new float[Out * In];
            fixed (float* d = dequantized) layer.ReadWeight(d);
            Assert.NotEqual(weight, dequantized); // the reference is the 4-bit weight, not the original
            CheckLayer(layer, dequantized.Select(v => (double)v).ToArray(), biasValues.Select(v => (double)v).ToArray(), dora: false, seed: 16);
        }
    }

    [Fact]
    public void LoraWithDropoutOverABFloat16BaseMatchesFiniteDifferences()
    {
        var rng = new Rng(17);
        var weight = Uniform(rng, Out * In, 0.5f);
        var bits = (ushort*)NativeMemory.Alloc((nuint)(Out * In), sizeof(ushort));
        try
        {
            for (int i = 0; i < weight.Length; i++) bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(weight[i]) >> 16);
            var widened = Enumerable.Range(0, Out * In).Select(i => (double)BitConverter.UInt32BitsToSingle((uint)bits[i] << 16)).ToArray();
            using var layer = new HalfLinear(Info(bias: false), new HalfMatrix("layers.0.proj.weight", Out, In, bits, DType.BF16), null);
            CheckLayer(layer, widened, null, dora: false, seed: 18);
        }
        finally
        {
            NativeMemory.Free(bits);
        }
    }
}
