using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using Xunit;

namespace PeftSharp.Tests.Peft;

public sealed unsafe class LoraLinearTests
{
    private const int T = 5, In = 7, Out = 6, R = 3;

    private static DenseLinear Base(Rng rng, bool bias = true)
    {
        var info = new LinearModuleInfo("layers.0.proj", In, Out, bias);
        var layer = DenseLinear.Create(info, trainable: false);
        rng.FillUniform(layer.Weight.AsSpan(), -0.5f, 0.5f);
        if (layer.Bias != null) rng.FillUniform(layer.Bias.AsSpan(), -0.5f, 0.5f);
        return layer;
    }

    private static Parameter Input(Rng rng, bool grad = true)
    {
        var x = Parameter.Create("x", [T, In], grad);
        rng.FillUniform(x.AsSpan(), -1f, 1f);
        return x;
    }

    private static float[] Run(ILinearLayer layer, Tensor x, bool training = false, bool grad = false)
    {
        using var tape = new Tape { Training = training, GradEnabled = grad };
        return layer.Forward(new Ops(tape), x).AsSpan().ToArray();
    }

    [Fact]
    public void ZeroB_GivesTheBaseOutputBitwise()
    {
        var rng = new Rng(1);
        using var baseLayer = Base(rng);
        using var x = Input(rng);
        var expected = Run(baseLayer, x);
        using var lora = new LoraLinear(baseLayer);
        lora.AddAdapter("default", R, 2.0, 0f, "true", useDora: false, trainable: true, rng);
        lora.SetActiveAdapters(["default"]);
        Assert.Contains(lora["default"].A.AsSpan().ToArray(), v => v != 0);
        Assert.Equal(expected, Run(lora, x));
        Assert.Equal(expected, Run(lora, x, training: true, grad: true));
    }

    [Fact]
    public void KaimingInit_MatchesTorchBoundAndGaussianStd()
    {
        var rng = new Rng(2);
        using var baseLayer = new DenseLinear(new LinearModuleInfo("m", 400, 4, false), Parameter.Create("m.weight", [4, 400], false), null);
        using var lora = new LoraLinear(baseLayer);
        var a = lora.AddAdapter("k", 50, 1, 0, "true", false, true, rng).A.AsSpan().ToArray();
        float bound = 1f / MathF.Sqrt(400);
        Assert.All(a, v => Assert.InRange(v, -bound, bound));
        Assert.True(a.Max() > 0.95f * bound && a.Min() < -0.95f * bound);
        var g = lora.AddAdapter("g", 50, 1, 0, "gaussian", false, true, rng).A.AsSpan().ToArray();
        double std = Math.Sqrt(g.Select(v => (double)v * v).Average());
        Assert.InRange(std, 0.9 / 50, 1.1 / 50);
        Assert.All(lora["g"].B.AsSpan().ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void DisabledAdapters_GiveTheBaseAndSeveralActiveAdaptersAreSummed()
    {
        var rng = new Rng(3);
        using var baseLayer = Base(rng);
        using var x = Input(rng);
        var baseOut = Run(baseLayer, x);
        using var lora = new LoraLinear(baseLayer);
        lora.AddAdapter("a", R, 2.0, 0f, "false", false, true, rng);
        lora.AddAdapter("b", 2, 0.5, 0f, "false", false, true, rng);
        lora.SetActiveAdapters(["a"]);
        var ya = Run(lora, x);
        lora.SetActiveAdapters(["b"]);
        var yb = Run(lora, x);
        lora.SetActiveAdapters(["a", "b"]);
        var yab = Run(lora, x);
        Assert.NotEqual(baseOut, ya);
        for (int i = 0; i < yab.Length; i++) Assert.Equal(ya[i] + yb[i] - baseOut[i], yab[i], 1e-5f);
        lora.AdaptersDisabled = true;
        Assert.Equal(baseOut, Run(lora, x));
    }

    [Fact]
    public void Dropout_AppliesOnlyWhileTraining_AndOnlyToTheAdapterInput()
    {
        var rng = new Rng(4);
        using var baseLayer = Base(rng);
        using var x = Input(rng);
        using var lora = new LoraLinear(baseLayer);
        lora.AddAdapter("default", R, 2.0, 0.5f, "false", false, true, rng);
        lora.SetActiveAdapters(["default"]);
        var eval = Run(lora, x, training: false);
        var reference = Reference.Lora(baseLayer, lora["default"], Reference.D(x));
        for (int i = 0; i < eval.Length; i++) Assert.Equal(reference[i], eval[i], 1e-5);
        var train = Run(lora, x, training: true);
        Assert.NotEqual(eval, train);
        // The adapter with B = 0 under dropout still gives the base: dropout never touches the base input.
        lora.AddAdapter("zero", R, 2.0, 0.5f, "true", false, true, rng);
        lora.SetActiveAdapters(["zero"]);
        Assert.Equal(Run(baseLayer, x), Run(lora, x, training: true));
    }

    [Fact]
    public void Gradients_MatchFiniteDifferencesOfADoubleReference()
    {
        var rng = new Rng(5);
        using var baseLayer = Base(rng);
        using var x = Input(rng);
        using var lora = new LoraLinear(baseLayer);
        var ad = lora.AddAdapter("default", R, 1.7, 0f, "false", false, true, rng);
        lora.SetActiveAdapters(["default"]);
        var w = new double[T * Out];
        for (int i = 0; i < w.Length; i++) w[i] = rng.NextDouble() - 0.5;
        Backward(lora, x, w);

        double[] xd = Reference.D(x), a = Reference.D(ad.A), b = Reference.D(ad.B);
        double Loss() => Reference.Dot(Reference.Lora(baseLayer, ad.Scaling, a, b, xd), w);
        Reference.CheckGradient(a, ad.A.GradSpan().ToArray(), Loss, "dA");
        Reference.CheckGradient(b, ad.B.GradSpan().ToArray(), Loss, "dB");
        Reference.CheckGradient(xd, x.GradSpan().ToArray(), Loss, "dx");
    }

    [Fact]
    public void DoraGradients_MatchFiniteDifferencesWithTheNormDetached()
    {
        var rng = new Rng(6);
        using var baseLayer = Base(rng);
        using var x = Input(rng);
        using var lora = new LoraLinear(baseLayer);
        var ad = lora.AddAdapter("default", R, 1.3, 0f, "false", useDora: true, trainable: true, rng);
        lora.SetActiveAdapters(["default"]);
        // Move m off its initial value so (m/‖·‖ − 1) is not zero.
        for (int i = 0; i < Out; i++) ad.Magnitude!.Data[i] *= 1f + 0.1f * (i + 1);
        var w = new double[T * Out];
        for (int i = 0; i < w.Length; i++) w[i] = rng.NextDouble() - 0.5;
        var y = Backward(lora, x, w);

        double[] xd = Reference.D(x), a = Reference.D(ad.A), b = Reference.D(ad.B), m = Reference.D(ad.Magnitude!);
        var norm = Reference.DoraNorm(baseLayer, ad.Scaling, a, b); // held constant: detached, as PEFT does
        var z = Reference.Dora(baseLayer, ad.Scaling, a, b, m, norm, xd);
        for (int i = 0; i < z.Length; i++) Assert.Equal(z[i], y[i], 1e-5);
        double Loss() => Reference.Dot(Reference.Dora(baseLayer, ad.Scaling, a, b, m, norm, xd), w);
        Reference.CheckGradient(a, ad.A.GradSpan().ToArray(), Loss, "dA");
        Reference.CheckGradient(b, ad.B.GradSpan().ToArray(), Loss, "dB");
        Reference.CheckGradient(m, ad.Magnitude!.GradSpan().ToArray(), Loss, "dm");
        Reference.CheckGradient(xd, x.GradSpan().ToArray(), Loss, "dx");
    }

    [Fact]
    public void DoraWithZeroB_GivesTheBase()
    {
        var rng = new Rng(7);
        using var baseLayer = Base(rng);
        using var x = Input(rng);
        var expected = Run(baseLayer, x);
        using var lora = new LoraLinear(baseLayer);
        lora.AddAdapter("default", R, 2.0, 0f, "true", useDora: true, trainable: true, rng);
        lora.SetActiveAdapters(["default"]);
        var y = Run(lora, x);
        for (int i = 0; i < y.Length; i++) Assert.Equal(expected[i], y[i], 1e-5f);
    }

    private static float[] Backward(LoraLinear layer, Parameter x, double[] w)
    {
        using var tape = new Tape();
        var ops = new Ops(tape);
        var y = layer.Forward(ops, x);
        var weights = Parameter.Create("w", [T, Out], false);
        for (int i = 0; i < w.Length; i++) weights.Data[i] = (float)w[i];
        // loss = Σ w·y through ops (Linear with a [1, T·Out] weight on the flattened output).
        var flat = Ops.Reshape(y, 1, T * Out);
        var wrow = Ops.Reshape(weights, 1, T * Out);
        var loss = ops.Linear(flat, wrow);
        tape.Backward(loss);
        var result = y.AsSpan().ToArray();
        weights.Dispose();
        return result;
    }
}

/// <summary>Double-precision references for LoRA and DoRA and a central-difference checker.</summary>
internal static unsafe class Reference
{
    public static double[] D(Tensor t) => t.AsSpan().ToArray().Select(v => (double)v).ToArray();

    public static double Dot(double[] a, double[] b) => a.Zip(b, (p, q) => p * q).Sum();

    private static (double[] W, double[]? Bias, int N, int K) Weights(DenseLinear l) =>
        (D(l.Weight), l.Bias == null ? null : D(l.Bias), l.Info.OutFeatures, l.Info.InFeatures);

    /// <summary>x·Wᵀ (no bias), rows × out.</summary>
    public static double[] MatMulT(double[] x, double[] w, int rows, int n, int k)
    {
        var y = new double[rows * n];
        for (int t = 0; t < rows; t++)
            for (int i = 0; i < n; i++)
            {
                double acc = 0;
                for (int j = 0; j < k; j++) acc += x[t * k + j] * w[i * k + j];
                y[t * n + i] = acc;
            }
        return y;
    }

    /// <summary>B·A (n × k).</summary>
    public static double[] BA(double[] a, double[] b, int n, int r, int k)
    {
        var d = new double[n * k];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++)
            {
                double acc = 0;
                for (int q = 0; q < r; q++) acc += b[i * r + q] * a[q * k + j];
                d[i * k + j] = acc;
            }
        return d;
    }

    public static double[] Lora(DenseLinear l, LoraAdapter ad, double[] x) => Lora(l, ad.Scaling, D(ad.A), D(ad.B), x);

    public static double[] Lora(DenseLinear l, double s, double[] a, double[] b, double[] x)
    {
        var (w, bias, n, k) = Weights(l);
        int rows = x.Length / k, r = a.Length / k;
        var ba = BA(a, b, n, r, k);
        var eff = w.Select((v, i) => v + s * ba[i]).ToArray();
        var y = MatMulT(x, eff, rows, n, k);
        if (bias != null) for (int i = 0; i < y.Length; i++) y[i] += bias[i % n];
        return y;
    }

    public static double[] DoraNorm(DenseLinear l, double s, double[] a, double[] b)
    {
        var (w, _, n, k) = Weights(l);
        var ba = BA(a, b, n, a.Length / k, k);
        return Enumerable.Range(0, n).Select(i => Math.Sqrt(Enumerable.Range(0, k).Sum(j => Math.Pow(w[i * k + j] + s * ba[i * k + j], 2)))).ToArray();
    }

    /// <summary>PEFT's DoRA forward (no dropout) with a given (detached) norm: y = x·Wᵀ + b + (g − 1)·x·Wᵀ + g·s·x·Aᵀ·Bᵀ.</summary>
    public static double[] Dora(DenseLinear l, double s, double[] a, double[] b, double[] m, double[] norm, double[] x)
    {
        var (w, bias, n, k) = Weights(l);
        int rows = x.Length / k, r = a.Length / k;
        var baseOut = MatMulT(x, w, rows, n, k);
        var lora = MatMulT(x, BA(a, b, n, r, k), rows, n, k);
        var y = new double[rows * n];
        for (int i = 0; i < y.Length; i++)
        {
            int c = i % n;
            double g = m[c] / norm[c];
            y[i] = baseOut[i] + (bias?[c] ?? 0) + (g - 1) * baseOut[i] + g * s * lora[i];
        }
        return y;
    }

    /// <summary>Central differences of <paramref name="loss"/> over every entry of <paramref name="values"/> against <paramref name="analytic"/>.</summary>
    public static void CheckGradient(double[] values, float[] analytic, Func<double> loss, string what)
    {
        Assert.Equal(values.Length, analytic.Length);
        const double h = 1e-5;
        double scale = Math.Max(1e-3, analytic.Max(v => Math.Abs((double)v)));
        for (int i = 0; i < values.Length; i++)
        {
            double keep = values[i];
            values[i] = keep + h;
            double up = loss();
            values[i] = keep - h;
            double down = loss();
            values[i] = keep;
            double fd = (up - down) / (2 * h);
            Assert.True(Math.Abs(fd - analytic[i]) <= 2e-4 * scale + 1e-5,
                $"{what}[{i}]: analytic {analytic[i]} vs finite difference {fd}");
        }
    }
}
