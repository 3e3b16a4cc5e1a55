using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using PeftSharp.Tests.Quantization;

namespace PeftSharp.Tests.Kernels;

/// <summary>
/// The emitted AVX512-BF16 micro-kernel: its bytes against llvm-mc's (golden), its results against the managed
/// VDPBF16PS oracle bit for bit, the capability check against /proc/cpuinfo, and the bf16-compute GEMMs it serves
/// against the f32 path within bf16 tolerance. Tests that need the instruction return early on a CPU without it
/// (the encodings and the managed oracle are still checked).
/// </summary>
[Collection(SimdForcingCollection.Name)]
public unsafe class Bf16DotTests
{
    private static string Golden(string name) => Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "bf16dot", name);

    [Theory]
    [InlineData(false, "kernel_store.hex")]
    [InlineData(true, "kernel_add.hex")]
    public void EmittedKernelIsTheBytesLlvmMcAssembles(bool accumulate, string file)
    {
        // Golden/bf16dot/make_kernels.py writes the kernel as AT&T assembly and assembles it with llvm-mc.
        string expected = File.ReadAllText(Golden(file)).Trim();
        Assert.Equal(expected, Convert.ToHexStringLower(Bf16Dot.EmitKernel(accumulate)));
    }

    /// <summary>Single encodings outside the kernel's own operands (llvm-mc -show-encoding): high registers, disp32, r8+ bases.</summary>
    [Fact]
    public void EncodingsMatchLlvmMc()
    {
        Check(e => e.Vdpbf16ps(0, 24, 27), "62923e4052c3");            // vdpbf16ps %zmm27, %zmm24, %zmm0
        Check(e => e.Vdpbf16ps(31, 15, 8), "6242064852f8");            // vdpbf16ps %zmm8, %zmm15, %zmm31
        Check(e => e.Vdpbf16ps(9, 17, 1), "6272764052c9");             // vdpbf16ps %zmm1, %zmm17, %zmm9
        Check(e => e.VpbroadcastdLoad(27, X64Emitter.Rdi, 28), "62627d48585f07"); // vpbroadcastd 28(%rdi), %zmm27
        Check(e => e.VpbroadcastdLoad(3, X64Emitter.R8, 1024), "62d27d485898" + "00040000"); // vpbroadcastd 1024(%r8), %zmm3
        Check(e => e.VmovupsLoad(26, X64Emitter.Rsi, 128), "62617c48105602");     // vmovups 128(%rsi), %zmm26
        Check(e => e.VmovupsLoad(1, X64Emitter.Rsi, 100), "62f17c48108e64000000"); // vmovups 100(%rsi), %zmm1 (not a multiple of 64)
        Check(e => e.VmovupsStore(X64Emitter.Rcx, 128, 23), "62e17c48117902");    // vmovups %zmm23, 128(%rcx)
        Check(e => e.VaddpsLoad(22, 22, X64Emitter.Rcx, 64), "62e14c40587101");   // vaddps 64(%rcx), %zmm22, %zmm22
        Check(e => e.VaddpsLoad(5, 5, X64Emitter.Rcx, 0), "62f154485829");        // vaddps (%rcx), %zmm5, %zmm5
        Check(e => e.Vpxord(23, 23, 23), "62a14540efff");              // vpxord %zmm23, %zmm23, %zmm23
        Check(e => e.AddImmediate(X64Emitter.Rdi, 32), "4883c720");    // add $32, %rdi
        Check(e => e.AddImmediate(X64Emitter.Rsi, 192), "4881c6c0000000"); // add $192, %rsi
        Check(e => e.AddImmediate(X64Emitter.R8, -8), "4983c0f8");     // add $-8, %r8
        Check(e => e.AddRegister(X64Emitter.Rcx, X64Emitter.R8), "4c01c1"); // add %r8, %rcx
        Check(e => e.Decrement(X64Emitter.Rdx), "48ffca");             // dec %rdx
        Check(e => e.Decrement(X64Emitter.R8), "49ffc8");              // dec %r8
        Check(e => e.JumpIfNotZero(0), "0f85faffffff");                // jnz to its own start
        Check(e => e.Vzeroupper(), "c5f877");
        Check(e => e.Ret(), "c3");
        Assert.Throws<ArgumentException>(() => new X64Emitter().VmovupsLoad(0, X64Emitter.Rsp, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new X64Emitter().Vdpbf16ps(32, 0, 0));

        static void Check(Action<X64Emitter> emit, string hex)
        {
            var e = new X64Emitter();
            emit(e);
            Assert.Equal(hex, Convert.ToHexStringLower(e.ToArray()));
        }
    }

    [Fact]
    public void CapabilityMatchesTheKernelsCpuFlags()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo")) return;
        var flags = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal));
        if (flags == null) return;
        bool listed = flags.Split(' ', StringSplitOptions.RemoveEmptyEntries).Contains("avx512_bf16");
        Assert.Equal(listed, Bf16Dot.HardwareSupported);
        if (Environment.GetEnvironmentVariable("PEFTSHARP_BF16_DOT") != "0") Assert.Equal(listed, Bf16Dot.Emitted);
    }

    /// <summary>The managed lane mirrors VDPBF16PS's stated arithmetic: odd product first, each step one rounding, DAZ, FTZ.</summary>
    [Fact]
    public void OracleLaneFollowsIntelsPseudocode()
    {
        // 1 + 2^-8 squared = 1 + 2^-7 + 2^-16 is exact in f32; added to 2^24 each step rounds alone.
        uint x = Pair(Bf(1f + 1f / 256), Bf(1f)), y = Pair(Bf(1f + 1f / 256), Bf(3f));
        Assert.Equal(MathF.FusedMultiplyAdd(1f, 3f, MathF.FusedMultiplyAdd(1f + 1f / 256, 1f + 1f / 256, 1e7f)), Bf16Dot.DotPair(x, y, 1e7f));
        // Order: hi then lo. 2^24 + 1 (hi) ties to 2^24, then + 2 gives 2^24 + 2; lo first (2^24 + 2, then + 1 ties
        // to even) or one rounding of the whole sum (2^24 + 3) would give 2^24 + 4.
        Assert.Equal(16777218f, Bf16Dot.DotPair(Pair(Bf(1f), Bf(2f)), Pair(Bf(1f), Bf(1f)), 16777216f));
        // DAZ: a denormal bf16 (2^-130) times 2^100 is read as 0, not 2^-30.
        ushort tiny = (ushort)(BitConverter.SingleToUInt32Bits(MathF.Pow(2, -130)) >> 16);
        Assert.Equal(0f, Bf16Dot.DotPair(Pair(tiny, 0), Pair(Bf(MathF.Pow(2, 100)), 0), 0f));
        // FTZ: 2^-70 · 2^-60 = 2^-130 is denormal in f32 and flushed.
        Assert.Equal(0f, Bf16Dot.DotPair(Pair(Bf(MathF.Pow(2, -70)), 0), Pair(Bf(MathF.Pow(2, -60)), 0), 0f));
    }

    /// <summary>The emitted kernel equals the managed oracle bit for bit: depths even and odd, store and accumulate, a strided C.</summary>
    [Fact]
    public void EmittedKernelEqualsTheManagedOracle()
    {
        if (!Bf16Dot.Emitted) return;
        using var forced = Simd.Force(SimdPath.Vector512);
        var rng = new Random(5);
        foreach (int kc in new[] { 1, 2, 3, 16, 255, 256 })
            foreach (bool accumulate in new[] { false, true })
            {
                // Values over a wide range of magnitudes (and some exact zeros) so the rounding of each step matters.
                using var a = new NativeBuffer<float>((long)kc * Bf16Dot.Rows);
                using var b = new NativeBuffer<float>((long)kc * Bf16Dot.Cols);
                Fill(a, rng);
                Fill(b, rng);
                Bf16Dot.ToPairs(a.Pointer, kc, Bf16Dot.Rows);
                Bf16Dot.ToPairs(b.Pointer, kc, Bf16Dot.Cols);
                const int ldc = 53;
                var start = FourBitGemmTests.Uniform(Bf16Dot.Rows * ldc, kc);
                float[] c = (float[])start.Clone(), expected = (float[])start.Clone();
                fixed (float* pc = c, pe = expected)
                {
                    Bf16Dot.Kernel(a.Pointer, b.Pointer, kc, pc, ldc, accumulate);
                    Bf16Dot.ReferenceKernel(a.Pointer, b.Pointer, kc, pe, ldc, accumulate);
                }
                for (int i = 0; i < c.Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(c[i]),
                        $"kc={kc} accumulate={accumulate} C[{i / ldc},{i % ldc}]: emitted {c[i]:R}, oracle {expected[i]:R}");
            }
    }

    /// <summary>Pair words hold depth 2q (low half) and 2q + 1 (high half) rounded as Precision.F32ToBf16 rounds; an odd depth's last high half is 0.</summary>
    [Theory]
    [InlineData(3, 3)]
    [InlineData(48, 7)]
    [InlineData(8, 256)]
    [InlineData(29, 6)]
    public void ToPairsRoundsAndInterleavesNeighbouringDepths(int width, int depth)
    {
        using var forced = Simd.Force(SimdPath.Vector512);
        var rng = new Random(width + depth);
        float[] strip = new float[width * depth];
        for (int i = 0; i < strip.Length; i++) strip[i] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-30, 30)));
        float[] original = (float[])strip.Clone();
        fixed (float* p = strip) Bf16Dot.ToPairs(p, depth, width);
        for (int q = 0; q < (depth + 1) / 2; q++)
            for (int j = 0; j < width; j++)
            {
                ushort low = Bf(original[2 * q * width + j]);
                ushort high = 2 * q + 1 < depth ? Bf(original[(2 * q + 1) * width + j]) : (ushort)0;
                Assert.Equal(Pair(high, low), BitConverter.SingleToUInt32Bits(strip[q * width + j]));
            }
    }

    /// <summary>
    /// The bf16-compute 4-bit GEMMs (forward and input gradient, training shapes and odd edges) with the emitted kernel
    /// against the same product with it off (the f32 kernel over the same rounded values) and against the exact product
    /// of the rounded operands: both within the f32 accumulation bound k·2⁻²⁴·Σ|x||w|.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void FourBitBf16GemmAgreesWithTheF32KernelWithinBf16Tolerance(int threads)
    {
        if (!Bf16Dot.Emitted) return;
        using var forced = Simd.Force(SimdPath.Vector512);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            int seed = 0;
            // Past the 32 rows up to which the skinny path takes bf16-compute 4-bit products.
            foreach (var (m, n, k) in new[] { (64, 96, 512), (37, 101, 333), (200, 48, 257), (33, 500, 64) })
            {
                seed++;
                using var w = Quantized4BitTensor.Quantize(Gaussian.Sample(n * k, seed), [n, k], QuantType.Nf4, 64, doubleQuant: true);
                float[] x = FourBitGemmTests.Uniform(m * k, seed + 1), dy = FourBitGemmTests.Uniform(m * n, seed + 2), dense = new float[n * k];
                w.Dequantize(dense);
                float[] xr = FourBitGemmTests.Rounded(x, DType.BF16), dyr = FourBitGemmTests.Rounded(dy, DType.BF16), wr = FourBitGemmTests.Rounded(dense, DType.BF16);
                float[] y = new float[m * n], yOff = new float[m * n], yRef = new float[m * n], yScale = new float[m * n];
                float[] dx = new float[m * k], dxOff = new float[m * k], dxRef = new float[m * k], dxScale = new float[m * k];
                float[] xa = xr.Select(MathF.Abs).ToArray(), dya = dyr.Select(MathF.Abs).ToArray(), wa = wr.Select(MathF.Abs).ToArray();
                fixed (float* px = x, pdy = dy, py = y, pyo = yOff, pdx = dx, pdxo = dxOff)
                fixed (float* pxr = xr, pdyr = dyr, pwr = wr, pyr = yRef, pdxr = dxRef, pxa = xa, pdya = dya, pwa = wa, pys = yScale, pdxs = dxScale)
                {
                    FourBitGemm.LinearForward4Bit(px, w, null, py, m, DType.BF16);
                    FourBitGemm.LinearBackwardInput4Bit(pdy, w, pdx, m, accumulate: false, DType.BF16);
                    using (Bf16Dot.Disable())
                    {
                        FourBitGemm.LinearForward4Bit(px, w, null, pyo, m, DType.BF16);
                        FourBitGemm.LinearBackwardInput4Bit(pdy, w, pdxo, m, accumulate: false, DType.BF16);
                    }
                    GemmReference.Compute(false, true, m, n, k, pxr, k, pwr, k, pyr, n, false);
                    GemmReference.Compute(false, false, m, k, n, pdyr, n, pwr, k, pdxr, k, false);
                    GemmReference.Compute(false, true, m, n, k, pxa, k, pwa, k, pys, n, false);
                    GemmReference.Compute(false, false, m, k, n, pdya, n, pwa, k, pdxs, k, false);
                }
                AssertWithin(yRef, y, yScale, k, $"Y m={m} n={n} k={k}");
                AssertWithin(yRef, yOff, yScale, k, $"Y (kernel off) m={m} n={n} k={k}");
                AssertWithin(dxRef, dx, dxScale, n, $"dX m={m} n={n} k={k}");
                AssertWithin(dxRef, dxOff, dxScale, n, $"dX (kernel off) m={m} n={n} k={k}");
                Assert.False(y.AsSpan().SequenceEqual(yOff), $"m={m} n={n} k={k}: the emitted kernel did not run (the product is the f32 kernel's bit for bit)");
            }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    /// <summary>
    /// With the kernel on, the 4-bit product with bf16 compute packs W's dequantized strips as pairs itself (transposed for the
    /// forward, by rows for the input gradient): both must equal, bit for bit, the same products of the dequantized dense W
    /// (f32 packing rounded by <see cref="Bf16Dot.ToPairs"/>), at odd and even depths, edge strips and two depth blocks.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void FourBitPairPackingEqualsTheDensePairPackingBitForBit(int threads)
    {
        if (!Bf16Dot.Emitted) return;
        using var forced = Simd.Force(SimdPath.Vector512);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            int seed = 40;
            foreach (var (m, n, k) in new[] { (70, 130, 300), (65, 97, 333), (80, 200, 64), (90, 64, 511) })
            {
                seed++;
                using var w = Quantized4BitTensor.Quantize(Gaussian.Sample(n * k, seed), [n, k], QuantType.Nf4, 64, doubleQuant: true);
                float[] x = FourBitGemmTests.Uniform(m * k, seed + 1), dy = FourBitGemmTests.Uniform(m * n, seed + 2), dense = new float[n * k];
                w.Dequantize(dense);
                float[] y = new float[m * n], yDense = new float[m * n], dx = new float[m * k], dxDense = new float[m * k];
                fixed (float* px = x, pdy = dy, pw = dense, py = y, pyd = yDense, pdx = dx, pdxd = dxDense)
                {
                    FourBitGemm.LinearForward4Bit(px, w, null, py, m, DType.BF16);
                    Gemm.LinearForward(px, pw, null, pyd, m, n, k, DType.BF16);
                    FourBitGemm.LinearBackwardInput4Bit(pdy, w, pdx, m, accumulate: false, DType.BF16);
                    Gemm.LinearBackwardInput(pdy, pw, pdxd, m, n, k, accumulate: false, DType.BF16);
                }
                Assert.True(yDense.AsSpan().SequenceEqual(y), $"Y m={m} n={n} k={k} threads={threads}");
                Assert.True(dxDense.AsSpan().SequenceEqual(dx), $"dX m={m} n={n} k={k} threads={threads}");
            }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    /// <summary>With the kernel off (the capability check's fallback) the bf16 product is the f32 kernel's on the rounded values, bit for bit.</summary>
    [Fact]
    public void KernelOffIsTheF32KernelOnRoundedValues()
    {
        using (Simd.Force(SimdPath.Vector256)) Assert.False(Bf16Dot.Enabled);
        using var forced = Simd.Force(SimdPath.Vector512);
        using var off = Bf16Dot.Disable();
        Assert.False(Bf16Dot.Enabled);
        // m past GemmSkinny's row groups (64 rows with an f32 W in place), so both products take the blocked GEMM.
        const int m = 70, n = 130, k = 300;
        using var w = Quantized4BitTensor.Quantize(Gaussian.Sample(n * k, 9), [n, k], QuantType.Nf4, 64, doubleQuant: false);
        float[] x = FourBitGemmTests.Uniform(m * k, 10), dense = new float[n * k];
        w.Dequantize(dense);
        float[] xr = FourBitGemmTests.Rounded(x, DType.BF16), wr = FourBitGemmTests.Rounded(dense, DType.BF16);
        float[] y = new float[m * n], expected = new float[m * n];
        fixed (float* px = x, pxr = xr, pwr = wr, py = y, pe = expected)
        {
            FourBitGemm.LinearForward4Bit(px, w, null, py, m, DType.BF16);
            Gemm.LinearForward(pxr, pwr, null, pe, m, n, k);
        }
        Assert.True(expected.AsSpan().SequenceEqual(y));
    }

    /// <summary>
    /// A QLoRA layer (NF4 base + LoRA, training shape: 64 rows) forward and backward with bnb_4bit_compute_dtype bfloat16 on
    /// the emitted kernel against the same layer in float32: Y and dX within the bf16 rounding of X (or dY) and W,
    /// (2⁻⁸ + depth·2⁻²⁴)·Σ|·||W|; the adapter's gradients, which never touch the base weight, are unchanged.
    /// </summary>
    [Fact]
    public void QloraLayerWithBf16ComputeMatchesTheF32PathWithinBf16Tolerance()
    {
        if (!Bf16Dot.Emitted) return;
        using var forced = Simd.Force(SimdPath.Vector512);
        const int rows = 64, k = 200, n = 96, rank = 8; // past the skinny path's 32 bf16-compute rows: the blocked VDPBF16PS product
        using var w = Quantized4BitTensor.Quantize(Gaussian.Sample(n * k, 3), [n, k], QuantType.Nf4, 64, doubleQuant: true);
        var f32 = Step(DType.F32);
        var bf16 = Step(DType.BF16);
        LayerResult off;
        using (Bf16Dot.Disable()) off = Step(DType.BF16);
        Assert.False(bf16.Y.AsSpan().SequenceEqual(off.Y), "the emitted kernel did not run");

        float[] dense = new float[n * k];
        w.Dequantize(dense);
        double[] yScale = new double[rows * n], dxScale = new double[rows * k];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n; j++)
                for (int p = 0; p < k; p++)
                {
                    double wa = Math.Abs(dense[j * k + p]);
                    yScale[i * n + j] += Math.Abs(f32.X[i * k + p]) * wa;
                    dxScale[i * k + p] += Math.Abs(f32.Dy[i * n + j]) * wa;
                }
        double bound = Math.Pow(2, -8) * 1.01;
        foreach (var (name, actual) in new[] { ("bf16", bf16), ("bf16, kernel off", off) })
        {
            for (int i = 0; i < yScale.Length; i++)
                Assert.True(Math.Abs(actual.Y[i] - f32.Y[i]) <= (bound + k * Math.Pow(2, -24)) * yScale[i] + 1e-6, $"{name} Y[{i}]: {actual.Y[i]} vs f32 {f32.Y[i]}");
            for (int i = 0; i < dxScale.Length; i++)
                Assert.True(Math.Abs(actual.Dx[i] - f32.Dx[i]) <= (bound + n * Math.Pow(2, -24)) * dxScale[i] + 1e-6, $"{name} dX[{i}]: {actual.Dx[i]} vs f32 {f32.Dx[i]}");
            Assert.Equal(f32.DA, actual.DA);
            Assert.Equal(f32.DB, actual.DB);
        }

        LayerResult Step(DType compute)
        {
            var rng = new Rng(5);
            using var x = Parameter.Create("x", [rows, k], requiresGrad: true);
            using var a = Parameter.Create("lora_A", [rank, k], requiresGrad: true);
            using var b = Parameter.Create("lora_B", [n, rank], requiresGrad: true);
            using var r = Parameter.Create("r", [1, rows * n], requiresGrad: false);
            rng.FillNormal(x.AsSpan(), 0f, 1f);
            rng.FillNormal(a.AsSpan(), 0f, 0.5f);
            rng.FillNormal(b.AsSpan(), 0f, 0.5f);
            rng.FillNormal(r.AsSpan(), 0f, 1f);
            using var tape = new Tape(1 << 20);
            var ops = new Ops(tape);
            var y = ops.Add(ops.Linear4Bit(x, w, null, compute), ops.Scale(ops.Linear(ops.Linear(x, a), b), 2f));
            tape.Backward(ops.Linear(Ops.Reshape(y, 1, rows * n), r));
            return new LayerResult(x.AsSpan().ToArray(), r.AsSpan().ToArray(), y.AsSpan().ToArray(),
                x.GradSpan().ToArray(), a.GradSpan().ToArray(), b.GradSpan().ToArray());
        }
    }

    /// <summary>One QLoRA step's inputs (X, dY = the loss weights r) and results.</summary>
    private sealed record LayerResult(float[] X, float[] Dy, float[] Y, float[] Dx, float[] DA, float[] DB);

    /// <summary>|expected − actual| ≤ depth·2⁻²⁴·Σ|x||w| + tiny: f32 accumulation of exact bf16 products in any order.</summary>
    private static void AssertWithin(float[] expected, float[] actual, float[] scale, int depth, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            double tolerance = depth * Math.Pow(2, -24) * scale[i] + 1e-30;
            if (!(Math.Abs(expected[i] - actual[i]) <= tolerance))
                Assert.Fail($"{what} [{i}]: got {actual[i]:R}, expected {expected[i]:R} (tolerance {tolerance:g3})");
        }
    }

    private static void Fill(NativeBuffer<float> buffer, Random rng)
    {
        for (long i = 0; i < buffer.Length; i++)
        {
            double r = rng.NextDouble();
            buffer.Pointer[i] = r < 0.05 ? 0f : (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-20, 20)));
        }
    }

    private static ushort Bf(float value) => Precision.F32ToBf16(value);

    private static uint Pair(ushort high, ushort low) => ((uint)high << 16) | low;
}
