using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Quantization;

/// <summary>The 4-bit dequant-GEMM against GemmReference on the dequantized (and compute-dtype rounded) matrices.</summary>
[Collection(PeftSharp.Tests.Kernels.SimdForcingCollection.Name)]
public unsafe class FourBitGemmTests
{
    public static TheoryData<SimdPath, int> PathsAndThreads()
    {
        var data = new TheoryData<SimdPath, int>();
        foreach (var path in new[] { SimdPath.Vector512, SimdPath.Vector256, SimdPath.Scalar })
            foreach (int threads in new[] { 1, 2 })
                data.Add(path, threads);
        return data;
    }

    // (m, out = n, in = k): odd sizes, element counts that are not a multiple of the block, depths across KC (256),
    // a decode row (m = 1), narrow outputs (the transposed narrow path), and products large enough to run in parallel.
    private static readonly (int M, int N, int K)[] Shapes =
    [
        (1, 1, 1), (1, 7, 33), (7, 33, 7), (33, 7, 1023), (1023, 33, 7), (7, 1023, 33), (70, 130, 520), (300, 100, 65), (1, 200, 300),
    ];

    private sealed class Case(int m, int n, int k, QuantType type, bool doubleQuant, int blockSize, int seed)
    {
        public readonly int M = m, N = n, K = k;
        public readonly float[] X = Uniform(m * k, seed), Dy = Uniform(m * n, seed + 1), Bias = Uniform(n, seed + 2);
        public readonly Quantized4BitTensor W = Quantized4BitTensor.Quantize(Gaussian.Sample(n * k, seed + 3), [n, k], type, blockSize, doubleQuant);
    }

    private static Case[]? _cases;

    private static Case[] Cases => _cases ??= Shapes.Select((s, i) => new Case(s.M, s.N, s.K,
        i % 2 == 0 ? QuantType.Nf4 : QuantType.Fp4, doubleQuant: i % 3 != 1, blockSize: i % 4 == 3 ? 32 : 64, seed: 100 * i)).ToArray();

    // The expected results per compute dtype, computed once (the reference is slow and does not depend on the path).
    private static readonly Dictionary<(int, DType), (float[] Y, float[] Dx, float[] YScale, float[] DxScale)> Expected = [];

    [Theory]
    [MemberData(nameof(PathsAndThreads))]
    public void ForwardAndInputGradientEqualTheDequantizedProduct(SimdPath path, int threads)
    {
        var cases = Cases;
        using var forced = Simd.Force(path);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            for (int c = 0; c < cases.Length; c++)
                foreach (var dtype in new[] { DType.F32, DType.BF16, DType.F16 })
                    CheckOne(c, cases[c], dtype);
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    private static void CheckOne(int index, Case t, DType dtype)
    {
        var (yRef, dxRef, yScale, dxScale) = ExpectedFor(index, t, dtype);
        int m = t.M, n = t.N, k = t.K;
        var y = new float[m * n];
        var dx = Uniform(m * k, 7);
        var dxStart = (float[])dx.Clone();
        fixed (float* px = t.X, pdy = t.Dy, pb = t.Bias, py = y, pdx = dx)
        {
            FourBitGemm.LinearForward4Bit(px, t.W, pb, py, m, dtype);
            FourBitGemm.LinearBackwardInput4Bit(pdy, t.W, pdx, m, accumulate: true, dtype);
        }
        for (int i = 0; i < y.Length; i++)
            AssertNear(yRef[i] + t.Bias[i % n], y[i], yScale[i], $"Y[{i / n},{i % n}] m={m} n={n} k={k} {dtype} {Simd.Path}");
        for (int i = 0; i < dx.Length; i++)
            AssertNear(dxStart[i] + dxRef[i], dx[i], dxScale[i], $"dX[{i / k},{i % k}] m={m} n={n} k={k} {dtype} {Simd.Path}");
    }

    private static (float[], float[], float[], float[]) ExpectedFor(int index, Case t, DType dtype)
    {
        lock (Expected)
        {
            if (Expected.TryGetValue((index, dtype), out var e)) return e;
            int m = t.M, n = t.N, k = t.K;
            float[] w = new float[n * k];
            using (Simd.Force(SimdPath.Scalar)) t.W.Dequantize(w);
            float[] x = Rounded(t.X, dtype), dy = Rounded(t.Dy, dtype);
            w = Rounded(w, dtype);
            float[] y = new float[m * n], dx = new float[m * k], yScale = new float[m * n], dxScale = new float[m * k];
            float[] xAbs = Abs(x), dyAbs = Abs(dy), wAbs = Abs(w);
            fixed (float* px = x, pdy = dy, pw = w, py = y, pdx = dx, pxa = xAbs, pdya = dyAbs, pwa = wAbs, pys = yScale, pdxs = dxScale)
            {
                GemmReference.Compute(false, true, m, n, k, px, k, pw, k, py, n, false);
                GemmReference.Compute(false, false, m, k, n, pdy, n, pw, k, pdx, k, false);
                GemmReference.Compute(false, true, m, n, k, pxa, k, pwa, k, pys, n, false);
                GemmReference.Compute(false, false, m, k, n, pdya, n, pwa, k, pdxs, k, false);
            }
            return Expected[(index, dtype)] = (y, dx, yScale, dxScale);
        }
    }

    [Fact]
    public void RoundingAppliesToTheActivationsToo()
    {
        // X = 1 + 2^-10 is not a bfloat16; W = 1 exactly (NF4 code 15, absmax 1): bf16 compute gives exactly 1.
        float[] x = [1f + 1f / 1024];
        using var w = Quantized4BitTensor.Quantize([1f], [1, 1], QuantType.Nf4);
        float y32, y16;
        fixed (float* px = x)
        {
            FourBitGemm.LinearForward4Bit(px, w, null, &y32, 1, DType.F32);
            FourBitGemm.LinearForward4Bit(px, w, null, &y16, 1, DType.BF16);
        }
        Assert.Equal(x[0], y32);
        Assert.Equal(1f, y16);
    }

    /// <summary>
    /// A decoding step (m ≤ 4 rows, the skinny GEMV path: 4-bit rows dequantized a few at a time, never packed) and a
    /// short prompt (9-64 rows: blocks of W rows dequantized once, shared by the row groups) give exactly the f32
    /// skinny product with the dequantized, compute-dtype-rounded weight and rounded X: the same sums in the same order;
    /// and that is the naive product (<see cref="GemmReference"/>) within f32 rounding. Depths with a tail past the last
    /// 16 lanes, blocks that straddle rows (k = 33, 100, 200 with 64-element blocks), NF4 and FP4 with and without
    /// double quantization, one thread and two. The VDPBF16PS kernel is off (it takes bf16 compute past eight rows when
    /// present; Bf16DotTests cover it).
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void SkinnyProductsEqualTheF32ProductWithTheDequantizedWeight(int threads)
    {
        using var forced = Simd.Force(SimdPath.Vector512);
        using var noBf16Dot = Bf16Dot.Disable();
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            int seed = 0;
            foreach (var (n, k) in new[] { (7, 33), (130, 100), (1023, 64), (300, 768), (261, 200) })
                foreach (int m in new[] { 1, 2, 3, 4, 9, 17, 33, 63, 64 })
                    foreach (var dtype in new[] { DType.F32, DType.BF16, DType.F16 })
                    {
                        seed++;
                        var type = seed % 2 == 0 ? QuantType.Nf4 : QuantType.Fp4;
                        bool doubleQuant = seed % 3 != 0;
                        using var w = Quantized4BitTensor.Quantize(Gaussian.Sample(n * k, seed), [n, k], type, 64, doubleQuant);
                        float[] x = Uniform(m * k, seed + 1), bias = Uniform(n, seed + 2), dense = new float[n * k];
                        w.Dequantize(dense);
                        float[] xRounded = Rounded(x, dtype), wRounded = Rounded(dense, dtype);
                        float[] y = new float[m * n], expected = new float[m * n], naive = new float[m * n], scale = new float[m * n];
                        float[] xAbs = Abs(xRounded), wAbs = Abs(wRounded);
                        fixed (float* px = x, pxr = xRounded, pw = wRounded, pb = bias, py = y, pe = expected, pn = naive, pxa = xAbs, pwa = wAbs, ps = scale)
                        {
                            FourBitGemm.LinearForward4Bit(px, w, pb, py, m, dtype);
                            Gemm.LinearForward(pxr, pw, pb, pe, m, n, k);
                            GemmReference.Compute(false, true, m, n, k, pxr, k, pw, k, pn, n, false);
                            GemmReference.Compute(false, true, m, n, k, pxa, k, pwa, k, ps, n, false);
                        }
                        string what = $"m={m} n={n} k={k} {type} double_quant={doubleQuant} {dtype} threads={threads}";
                        Assert.True(expected.AsSpan().SequenceEqual(y), $"{what}: the 4-bit product differs from the f32 one");
                        for (int i = 0; i < y.Length; i++)
                            AssertNear(naive[i] + bias[i % n], y[i], scale[i], $"Y[{i / n},{i % n}] {what}");
                    }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    [Fact]
    public void RejectsAnythingButA2DWeightAndAFloatComputeType()
    {
        using var w3 = Quantized4BitTensor.Quantize(new float[8], [2, 2, 2], QuantType.Nf4);
        using var w2 = Quantized4BitTensor.Quantize(new float[4], [2, 2], QuantType.Nf4);
        var buffer = new float[8];
        fixed (float* p = buffer)
        {
            float* ptr = p;
            Assert.Throws<ArgumentException>(() => FourBitGemm.LinearForward4Bit(ptr, w3, null, ptr, 1));
            Assert.Throws<ArgumentException>(() => FourBitGemm.LinearForward4Bit(ptr, w2, null, ptr, 1, DType.F64));
        }
    }

    private static void AssertNear(float expected, float actual, float scale, string what)
    {
        double tolerance = 1e-6 * scale + 1e-6;
        if (!(Math.Abs(expected - actual) <= tolerance))
            Assert.Fail($"{what}: got {actual}, expected {expected} (tolerance {tolerance:g3})");
    }

    internal static float[] Rounded(float[] values, DType dtype) => dtype switch
    {
        DType.BF16 => values.Select(v => Precision.Bf16ToF32(Precision.F32ToBf16(v))).ToArray(),
        DType.F16 => values.Select(v => (float)(Half)v).ToArray(),
        _ => (float[])values.Clone(),
    };

    private static float[] Abs(float[] values) => values.Select(MathF.Abs).ToArray();

    internal static float[] Uniform(int count, int seed)
    {
        var rng = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        return values;
    }
}
