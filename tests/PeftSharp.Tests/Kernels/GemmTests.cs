using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Kernels;

[Collection(PeftSharp.Tests.Kernels.SimdForcingCollection.Name)]
public unsafe class GemmTests
{
    public static TheoryData<SimdPath, int> PathsAndThreads()
    {
        var data = new TheoryData<SimdPath, int>();
        foreach (var path in new[] { SimdPath.Vector512, SimdPath.Vector256, SimdPath.Scalar })
            foreach (int threads in new[] { 1, 2 })
                data.Add(path, threads);
        return data;
    }

    // Odd sizes exercise every edge tile; the larger ones cross the KC/MC blocks, use the skinny, narrow and few-row paths and
    // run in parallel (130×1100×9: a rank update, split by rows; 100×1700×300: Ã kept across column blocks).
    private static readonly (int M, int N, int K)[] Shapes =
    [
        (1, 1, 1), (1, 7, 33), (7, 1, 33), (7, 33, 1), (33, 7, 7), (33, 33, 33), (7, 7, 1023),
        (1023, 7, 33), (33, 1023, 7), (200, 100, 300), (70, 130, 520), (300, 16, 200), (16, 300, 200), (8, 200, 300), (2000, 9, 70),
        (1, 1023, 33), (3, 70, 1000), (4, 37, 17), (2, 2000, 100), (61, 150, 40), (64, 70, 33), (130, 1100, 9), (100, 1700, 300),
    ];

    [Theory]
    [MemberData(nameof(PathsAndThreads))]
    public void EveryFormMatchesTheReference(SimdPath path, int threads)
    {
        using var forced = Simd.Force(path);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            var rng = new Random(1234);
            foreach (var (m, n, k) in Shapes)
                foreach (bool transA in new[] { false, true })
                    foreach (bool transB in new[] { false, true })
                        foreach (bool accumulate in new[] { false, true })
                            CheckOne(rng, m, n, k, transA, transB, accumulate, pad: rng.Next(0, 5));
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    [Fact]
    public void ThePartsOfAParallelProductDoNotChangeItsBitsAndTheirProfileAccountsForTheirTime()
    {
        int savedThreads = Parallelism.MaxThreads, savedParts = GemmBlocking.PartsPerThread;
        Parallelism.MaxThreads = 2;
        var rng = new Random(7);
        try
        {
            // Split along N (N >= M) and along M, with edge tiles, K across two KC blocks.
            foreach (var (m, n, k) in new[] { (200, 410, 300), (410, 200, 300) })
            {
                float[] a = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
                float[] b = Enumerable.Range(0, k * n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
                var results = new List<float[]>();
                foreach (int parts in new[] { 1, 2, 3 })
                {
                    GemmBlocking.PartsPerThread = parts;
                    var c = new float[m * n];
                    fixed (float* pa = a, pb = b, pc = c) Gemm.Compute(false, false, m, n, k, pa, k, pb, n, pc, n, false);
                    results.Add(c);
                }
                Assert.Equal(results[0], results[1]);
                Assert.Equal(results[0], results[2]);

                // The profile: every part counted (at least: the counters are global, and other tests may run products meanwhile),
                // and each thread's packing and kernel time within its parts'.
                GemmBlocking.PartsPerThread = 2;
                GemmPartProfile.TakeAndReset();
                GemmPartProfile.Enabled = true;
                try
                {
                    var c = new float[m * n];
                    fixed (float* pa = a, pb = b, pc = c) Gemm.Compute(false, false, m, n, k, pa, k, pb, n, pc, n, false);
                }
                finally { GemmPartProfile.Enabled = false; }
                var threads = GemmPartProfile.TakeAndReset();
                Assert.True(threads.Sum(t => t[4]) >= 4, "two threads × two parts each");
                foreach (var t in threads)
                {
                    Assert.True(t[0] > 0 && t[1] > 0 && t[2] > 0, "packing B, packing A and the kernels each take time");
                    Assert.True(t[0] + t[1] + t[2] <= t[3] * 1.0001, $"the parts' {t[3]} s hold their packing and kernels ({t[0]} + {t[1]} + {t[2]} s)");
                }
            }
        }
        finally
        {
            Parallelism.MaxThreads = savedThreads;
            GemmBlocking.PartsPerThread = savedParts;
        }
    }

    /// <summary>
    /// A product of few rows (a LoRA weight gradient dA = dHᵀ·X, m = the rank) reads B in place (<see cref="GemmFewRows"/>);
    /// each of its outputs must have the bits the same rows get inside a taller product on the packed path, over two depth
    /// blocks, with and without accumulation, on one and two threads.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void AFewRowProductHasTheBitsOfThoseRowsInATallerProduct(int threads)
    {
        using var forced = Simd.Force(SimdPath.Vector512);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            var rng = new Random(21);
            const int tall = 40, n = 1000, k = 300;
            float[] aT = Matrix(rng, k, tall, tall), b = Matrix(rng, k, n, n), c0 = Matrix(rng, tall, n, n);
            foreach (bool accumulate in new[] { false, true })
            {
                var whole = (float[])c0.Clone();
                fixed (float* pa = aT, pb = b, pc = whole) Gemm.Compute(true, false, tall, n, k, pa, tall, pb, n, pc, n, accumulate);
                foreach (int m in new[] { 1, 5, 8, 13, 16 })
                {
                    var few = (float[])c0.Clone();
                    fixed (float* pa = aT, pb = b, pc = few) Gemm.Compute(true, false, m, n, k, pa, tall, pb, n, pc, n, accumulate);
                    for (int i = 0; i < m * n; i++)
                        if (BitConverter.SingleToInt32Bits(few[i]) != BitConverter.SingleToInt32Bits(whole[i]))
                            Assert.Fail($"m={m} accumulate={accumulate} threads={threads}: C[{i / n},{i % n}] = {few[i]:R}, in the taller product {whole[i]:R}");
                }
            }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    private static void CheckOne(Random rng, int m, int n, int k, bool transA, bool transB, bool accumulate, int pad)
    {
        int aRows = transA ? k : m, aCols = transA ? m : k;
        int bRows = transB ? n : k, bCols = transB ? k : n;
        int lda = aCols + pad, ldb = bCols + pad, ldc = n + pad;
        // Padding holds NaN: reading it would poison the result, writing it would be caught below.
        float[] a = Matrix(rng, aRows, aCols, lda), b = Matrix(rng, bRows, bCols, ldb), c = Matrix(rng, m, n, ldc);
        float[] expected = (float[])c.Clone();
        fixed (float* pa = a, pb = b, pc = c, pe = expected)
        {
            Gemm.Compute(transA, transB, m, n, k, pa, lda, pb, ldb, pc, ldc, accumulate);
            GemmReference.Compute(transA, transB, m, n, k, pa, lda, pb, ldb, pe, ldc, accumulate);
        }
        double tolerance = 1e-5 * Math.Sqrt(k) + 1e-6;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < ldc; j++)
            {
                float got = c[i * ldc + j], want = expected[i * ldc + j];
                if (j >= n)
                    Assert.True(float.IsNaN(got), $"padding of C written at ({i},{j})");
                else if (Math.Abs(got - want) > tolerance)
                    Assert.Fail($"m={m} n={n} k={k} transA={transA} transB={transB} acc={accumulate} pad={pad} path={Simd.Path}: C[{i},{j}] = {got}, expected {want}");
            }
    }

    private static float[] Matrix(Random rng, int rows, int cols, int ld)
    {
        var data = new float[Math.Max(1, rows * ld)];
        Array.Fill(data, float.NaN);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) data[i * ld + j] = (float)(rng.NextDouble() * 2 - 1);
        return data;
    }

    [Theory]
    [MemberData(nameof(PathsAndThreads))]
    public void LinearFormsMatchTheReference(SimdPath path, int threads)
    {
        using var forced = Simd.Force(path);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            var rng = new Random(99);
            foreach (var (m, n, k) in new[] { (33, 7, 65), (64, 48, 96), (130, 16, 96), (7, 300, 33), (257, 8, 260) })
            {
                float[] x = Matrix(rng, m, k, k), w = Matrix(rng, n, k, k), bias = Matrix(rng, 1, n, n), dy = Matrix(rng, m, n, n);
                float[] y = new float[m * n], yRef = new float[m * n];
                float[] dx = Matrix(rng, m, k, k), dxRef = (float[])dx.Clone();
                float[] dw = Matrix(rng, n, k, k), dwRef = (float[])dw.Clone();
                fixed (float* px = x, pw = w, pbias = bias, pdy = dy, py = y, pyr = yRef, pdx = dx, pdxr = dxRef, pdw = dw, pdwr = dwRef)
                {
                    Gemm.LinearForward(px, pw, pbias, py, m, n, k);
                    GemmReference.Compute(false, true, m, n, k, px, k, pw, k, pyr, n, false);
                    for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) yRef[i * n + j] += bias[j];

                    Gemm.LinearBackwardInput(pdy, pw, pdx, m, n, k, accumulate: true);
                    GemmReference.Compute(false, false, m, k, n, pdy, n, pw, k, pdxr, k, true);

                    Gemm.LinearBackwardWeight(pdy, px, pdw, m, n, k, accumulate: true);
                    GemmReference.Compute(true, false, n, k, m, pdy, n, px, k, pdwr, k, true);
                }
                AssertClose(yRef, y, k);
                AssertClose(dxRef, dx, n);
                AssertClose(dwRef, dw, m);
            }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    [Theory]
    [InlineData(DType.BF16, SimdPath.Vector512)]
    [InlineData(DType.BF16, SimdPath.Vector256)]
    [InlineData(DType.BF16, SimdPath.Scalar)]
    [InlineData(DType.F16, SimdPath.Vector512)]
    [InlineData(DType.F16, SimdPath.Vector256)]
    [InlineData(DType.F16, SimdPath.Scalar)]
    public void HalfWeightsEqualTheWidenedF32Product(DType type, SimdPath path)
    {
        using var forced = Simd.Force(path);
        var rng = new Random(7);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (33, 7, 65), (70, 130, 300), (7, 1023, 33), (129, 16, 96), (40, 8, 768), (1, 130, 300), (3, 1023, 33), (2, 2001, 100), (4, 130, 300), (5, 130, 300), (8, 257, 64), (1, 50, 3072) })
        {
            float[] x = Matrix(rng, m, k, k), bias = Matrix(rng, 1, n, n), dy = Matrix(rng, m, n, n);
            var bits = new ushort[n * k];
            var widened = new float[n * k];
            for (int i = 0; i < bits.Length; i++)
            {
                float v = (float)(rng.NextDouble() * 2 - 1);
                bits[i] = type == DType.BF16 ? (ushort)(BitConverter.SingleToInt32Bits(v) >> 16) : BitConverter.HalfToUInt16Bits((Half)v);
                widened[i] = type == DType.BF16 ? BitConverter.Int32BitsToSingle(bits[i] << 16) : (float)BitConverter.UInt16BitsToHalf(bits[i]);
            }
            float[] y = new float[m * n], yF32 = new float[m * n], yRef = new float[m * n];
            float[] dx = Matrix(rng, m, k, k), dxF32 = (float[])dx.Clone(), dxRef = (float[])dx.Clone();
            fixed (float* px = x, pw = widened, pbias = bias, pdy = dy, py = y, pyf = yF32, pyr = yRef, pdx = dx, pdxf = dxF32, pdxr = dxRef)
            fixed (ushort* pbits = bits)
            {
                Gemm.LinearForward(px, pbits, type, pbias, py, m, n, k);
                Gemm.LinearForward(px, pw, pbias, pyf, m, n, k);
                Gemm.LinearForward(px, pw, pbias, pyr, m, n, k);
                GemmReference.Compute(false, true, m, n, k, px, k, pw, k, pyr, n, false);
                for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) yRef[i * n + j] += bias[j];

                Gemm.LinearBackwardInput(pdy, pbits, type, pdx, m, n, k, accumulate: true);
                Gemm.LinearBackwardInput(pdy, pw, pdxf, m, n, k, accumulate: true);
                GemmReference.Compute(false, false, m, k, n, pdy, n, pw, k, pdxr, k, true);
            }
            Assert.Equal(yF32, y);
            Assert.Equal(dxF32, dx);
            AssertClose(yRef, y, k);
            AssertClose(dxRef, dx, n);
        }
    }

    /// <summary>
    /// Batch invariance, which serving relies on (a request's tokens must not depend on the requests batched with it):
    /// on the skinny path every row of X·Wᵀ is bit-for-bit the product of that row alone, whatever the number of rows
    /// (direct rows, row groups, a prompt's prefill), the threads, and whether W is F32, BF16 or 4-bit (NF4 with f32
    /// or bf16 compute, FP4 with double quantization; a depth that is a multiple of the 4-bit block, where one row
    /// takes the in-register 4-bit path, and one that is not). Bf16 compute runs with the VDPBF16PS kernel off, which
    /// otherwise takes it past eight rows (its own tests cover that kernel).
    /// </summary>
    [Theory]
    [InlineData(1, 200)]
    [InlineData(2, 200)]
    [InlineData(1, 256)]
    [InlineData(2, 256)]
    public void EveryRowOfASkinnyProductEqualsThatRowAlone(int threads, int k)
    {
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        using var noBf16Dot = Bf16Dot.Disable();
        try
        {
            var rng = new Random(11);
            const int n = 301;
            float[] x = Matrix(rng, 64, k, k), w = Matrix(rng, n, k, k);
            var bits = new ushort[n * k];
            for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)(BitConverter.SingleToInt32Bits(w[i]) >> 16);
            using var nf4 = Quantized4BitTensor.Quantize(w, [n, k], QuantType.Nf4, 64, doubleQuant: false);
            using var fp4 = Quantized4BitTensor.Quantize(w, [n, k], QuantType.Fp4, 64, doubleQuant: true);
            fixed (float* px = x)
                foreach (string weights in new[] { "f32", "bf16", "nf4", "nf4 (bf16 compute)", "fp4" })
                {
                    var alone = new float[64 * n];
                    fixed (float* pa = alone)
                        for (int r = 0; r < 64; r++)
                            Product(weights, px + r * k, pa + r * n, 1);
                    foreach (int m in new[] { 2, 3, 4, 5, 8, 9, 13, 17, 32, 33, 63, 64 })
                    {
                        var y = new float[m * n];
                        fixed (float* py = y) Product(weights, px, py, m);
                        for (int i = 0; i < m * n; i++)
                            if (BitConverter.SingleToInt32Bits(y[i]) != BitConverter.SingleToInt32Bits(alone[i]))
                                Assert.Fail($"{weights} m={m} k={k} threads={threads}: C[{i / n},{i % n}] = {y[i]:R}, alone {alone[i]:R}");
                    }
                }

            void Product(string weights, float* rows, float* result, int m)
            {
                fixed (float* pw = w)
                fixed (ushort* pbits = bits)
                    switch (weights)
                    {
                        case "f32": Gemm.LinearForward(rows, pw, null, result, m, n, k); break;
                        case "bf16": Gemm.LinearForward(rows, pbits, DType.BF16, null, result, m, n, k); break;
                        case "nf4": FourBitGemm.LinearForward4Bit(rows, nf4, null, result, m); break;
                        case "nf4 (bf16 compute)": FourBitGemm.LinearForward4Bit(rows, nf4, null, result, m, DType.BF16); break;
                        default: FourBitGemm.LinearForward4Bit(rows, fp4, null, result, m); break;
                    }
            }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    [Fact]
    public void HalfWeightOverloadsRejectOtherTypes()
    {
        var bits = new ushort[4];
        var x = new float[4];
        var y = new float[4];
        Assert.Throws<ArgumentException>(() =>
        {
            fixed (ushort* pw = bits)
            fixed (float* px = x, py = y)
                Gemm.LinearForward(px, pw, DType.F32, null, py, 2, 2, 2);
        });
    }

    [Fact]
    public void ParallelForRunsEveryItemOnce()
    {
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = 2;
        try
        {
            var counts = new int[1000];
            fixed (int* p = counts)
                for (int round = 0; round < 50; round++)
                    Parallelism.For(counts.Length, &Increment, p);
            Assert.All(counts, c => Assert.Equal(50, c));
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    private static void Increment(int i, void* state) => Interlocked.Increment(ref ((int*)state)[i]);

    /// <summary>
    /// Many short calls (a decoding step's GEMVs), most over before the worker wakes: a worker called off must not run
    /// a later call's items twice or miss any, and one that does join must be waited for. Some items yield, so both
    /// orders happen.
    /// </summary>
    [Fact]
    public void ShortParallelCallsRunEveryItemOnceWhetherOrNotTheWorkerJoins()
    {
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = 2;
        try
        {
            const int rounds = 20000, items = 3;
            var counts = new int[rounds * items + 1];
            fixed (int* p = counts)
                for (int round = 0; round < rounds; round++)
                {
                    p[0] = round;   // the slot this round's items count into, read by every item
                    Parallelism.For(items, &CountInRound, p);
                }
            Assert.All(counts.AsSpan(1).ToArray(), c => Assert.Equal(1, c));
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    private static void CountInRound(int i, void* state)
    {
        int* counts = (int*)state;
        if ((counts[0] + i) % 97 == 0) Thread.Yield();
        Interlocked.Increment(ref counts[1 + counts[0] * 3 + i]);
    }

    private static void AssertClose(float[] expected, float[] actual, int k)
    {
        double tolerance = 1e-5 * Math.Sqrt(k) + 1e-6;
        for (int i = 0; i < expected.Length; i++)
            if (Math.Abs(expected[i] - actual[i]) > tolerance)
                Assert.Fail($"element {i}: {actual[i]}, expected {expected[i]} (k={k})");
    }
}
