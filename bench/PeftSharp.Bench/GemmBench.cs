using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `gemm [--threads 1,2] [--rounds 5] [--quick] [--only SUBSTRING] [--cpu-time] [--grouped-rows N] [--decode] [--bf16] [--bf16-kernel] [--pair-kc N] [--parts-per-thread N] [--profile-parts] [--update-depths LIST]`: GFLOP/s of <see cref="Gemm"/> on square, training and
/// LoRA shapes, alternating case by case with OpenBLAS's cblas_sgemm when libopenblas.so.0 is installed (run with
/// OPENBLAS_CORETYPE=SkylakeX to compare with its AVX-512 kernels). One JSON line per case, medians over rounds.
/// `--bf16` instead times each case with both operands rounded to bfloat16 (what a bf16 compute dtype multiplies) on the
/// emitted AVX512-BF16 kernel (<see cref="Bf16Dot"/>) and on the f32 kernel, alternating with the plain f32 product;
/// `--bf16-kernel` times the two 8×48 micro-kernels alone on one packed block (KC deep, in cache), one thread.
/// </summary>
public static unsafe class GemmBench
{
    internal readonly record struct Case(string Form, int M, int N, int K, bool TransA, bool TransB);

    public static int Run(string[] args)
    {
        int rounds = 5;
        bool quick = false, decode = false, bf16 = false, kernelOnly = false;
        string? only = null;
        var threadCounts = new List<int> { 1, Environment.ProcessorCount };
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--threads":
                    threadCounts = args[++i].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList();
                    break;
                case "--rounds": rounds = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--quick": quick = true; break;
                case "--only": only = args[++i]; break;
                case "--cpu-time": _cpuTime = true; break;
                case "--grouped-rows": _groupedRows = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--decode": decode = true; break;
                case "--bf16": bf16 = true; break;
                case "--bf16-kernel": kernelOnly = true; break;
                case "--nc": GemmBlocking.NC = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--pair-kc": GemmBlocking.PairKC = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--parts-per-thread": GemmBlocking.PartsPerThread = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--profile-parts": _profileParts = true; break;
                case "--update-depths":
                    _updateDepths = args[++i].Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
                    break;
                default:
                    Console.Error.WriteLine($"gemm: unknown option '{args[i]}' (expected --threads LIST, --rounds N, --quick, --only TEXT, --cpu-time, --grouped-rows N, --decode, --bf16, --pair-kc N, --bf16-kernel, --parts-per-thread N, --profile-parts, --update-depths LIST)");
                    return 1;
            }
        }
        if (kernelOnly) return MeasureBf16Kernel(rounds);
        if (decode)
        {
            foreach (int threads in threadCounts.Distinct()) Decode(threads, rounds);
            return 0;
        }
        var blas = _groupedRows > 0 ? null : OpenBlas.TryLoad();
        double minSeconds = quick ? 0.05 : 0.15;
        foreach (int threads in threadCounts.Distinct())
            foreach (var c in Cases(quick))
            {
                if (only != null && !c.Form.Contains(only, StringComparison.Ordinal)) continue;
                if (bf16) MeasureBf16(c, threads, rounds, minSeconds);
                else Measure(c, threads, rounds, minSeconds, blas);
            }
        return 0;
    }

    /// <summary>
    /// `--update-depths 1,2,4,8,16`: instead of the cases, a LoRA rank update Y = H·Bᵀ (512 × 768, the depth = the rank) at each
    /// depth: what a product that writes a 512 × 768 output costs besides its multiply-adds (the time at depth 1 is nearly all
    /// writing C), against the same at r 8 and 16.
    /// </summary>
    private static int[]? _updateDepths;

    private static IEnumerable<Case> Cases(bool quick)
    {
        if (_updateDepths != null)
        {
            foreach (int depth in _updateDepths) yield return new Case($"rank_update_k{depth}", 512, 768, depth, false, true);
            yield break;
        }
        // A prompt's prefill: a few rows against each GPT-2 weight (as nn.Linear stores it).
        foreach (int t in quick ? [32] : new[] { 8, 16, 32, 64, 128, 256 })
            foreach (var (outF, inF) in new[] { (2304, 768), (768, 768), (3072, 768), (768, 3072) })
                yield return new Case($"prefill_{t}", t, outF, inF, false, true);
        foreach (int s in quick ? [1024] : new[] { 1024, 2048 })
            yield return new Case("nn", s, s, s, false, false);
        foreach (int t in quick ? [512] : new[] { 512, 2048 })
        {
            foreach (var (outF, inF) in new[] { (2304, 768), (768, 768), (768, 3072) })
            {
                yield return new Case("linear_fwd", t, outF, inF, false, true);
                yield return new Case("linear_bwd_input", t, inF, outF, false, false);
                yield return new Case("linear_bwd_weight", outF, inF, t, true, false);
            }
            foreach (int r in new[] { 8, 16 })
            {
                const int d = 768;
                yield return new Case($"lora_r{r}_a_fwd", t, r, d, false, true);          // H = X·Aᵀ
                yield return new Case($"lora_r{r}_b_fwd", t, d, r, false, true);          // Y += H·Bᵀ
                yield return new Case($"lora_r{r}_b_bwd_input", t, r, d, false, false);   // dH = dY·B
                yield return new Case($"lora_r{r}_b_bwd_weight", d, r, t, true, false);   // dB = dYᵀ·H
                yield return new Case($"lora_r{r}_a_bwd_input", t, d, r, false, false);   // dX += dH·A
                yield return new Case($"lora_r{r}_a_bwd_weight", r, d, t, true, false);   // dA = dHᵀ·X
            }
        }
    }

    /// <summary>
    /// `--decode`: X (1, 4 or 8 rows) times the transposed weight of a GPT-2 head (50,257 × 768, 154 MB in f32, 77 MB in
    /// bf16), which no cache holds, as a decoding step streams its weights from memory; 64 MiB are read between calls so
    /// nothing of W is left in L3. GB/s of W, the median of `rounds` × 5 calls.
    /// </summary>
    private static void Decode(int threads, int rounds)
    {
        const int n = 50257, k = 768;
        Parallelism.MaxThreads = threads;
        using var w = Random((long)n * k, 2);
        using var bits = new NativeBuffer<ushort>((long)n * k, clear: false);
        for (long i = 0; i < (long)n * k; i++) bits.Pointer[i] = (ushort)(BitConverter.SingleToInt32Bits(w.Pointer[i]) >> 16);
        using var x = Random(8L * k, 1);
        using var y = new NativeBuffer<float>(8L * n);
        using var flush = Random(16L << 20, 3);
        foreach (var (type, bytes) in new[] { ("f32", 4L * n * k), ("bf16", 2L * n * k) })
            foreach (int m in new[] { 1, 4, 8 })
            {
                var gbs = new List<double>();
                for (int call = 0; call < rounds * 5; call++)
                {
                    float sink = 0;
                    for (long i = 0; i < flush.Length; i += 16) sink += flush.Pointer[i];
                    if (sink == float.MaxValue) Console.Write("");
                    long start = Stopwatch.GetTimestamp();
                    if (type == "f32") Gemm.LinearForward(x.Pointer, w.Pointer, null, y.Pointer, m, n, k);
                    else Gemm.LinearForward(x.Pointer, bits.Pointer, DType.BF16, null, y.Pointer, m, n, k);
                    gbs.Add(bytes / Stopwatch.GetElapsedTime(start).TotalSeconds / 1e9);
                }
                Console.WriteLine(FormattableString.Invariant(
                    $"{{\"op\":\"gemm\",\"form\":\"decode_from_memory\",\"weights\":\"{type}\",\"m\":{m},\"n\":{n},\"k\":{k},\"threads\":{threads},\"weight_gbs\":{Median(gbs):F1},\"median_of\":{gbs.Count}}}"));
            }
    }

    private static void Measure(Case c, int threads, int rounds, double minSeconds, OpenBlas? blas)
    {
        int aRows = c.TransA ? c.K : c.M, aCols = c.TransA ? c.M : c.K;
        int bRows = c.TransB ? c.N : c.K, bCols = c.TransB ? c.K : c.N;
        using var a = Random(aRows * (long)aCols, 1);
        using var b = Random(bRows * (long)bCols, 2);
        using var out1 = new NativeBuffer<float>((long)c.M * c.N);
        float* pa = a.Pointer, pb = b.Pointer, pc = out1.Pointer;
        Parallelism.MaxThreads = threads;
        blas?.SetThreads(threads);
        void Ours() => Gemm.Compute(c.TransA, c.TransB, c.M, c.N, c.K, pa, aCols, pb, bCols, pc, c.N, false);
        void Theirs() => blas!.Sgemm(c.TransA, c.TransB, c.M, c.N, c.K, pa, aCols, pb, bCols, pc, c.N);
        double flops = 2.0 * c.M * c.N * c.K;
        var ours = new List<double>();
        var theirs = new List<double>();
        int defaultGrouped = GemmSkinny.MaxGroupedRows;
        void Grouped()
        {
            GemmSkinny.MaxGroupedRows = _groupedRows;
            try { Ours(); } finally { GemmSkinny.MaxGroupedRows = defaultGrouped; }
        }
        var grouped = new List<double>();
        for (int round = 0; round < rounds; round++)
        {
            ours.Add(flops / Time(Ours, minSeconds) / 1e9);
            if (blas != null) theirs.Add(flops / Time(Theirs, minSeconds) / 1e9);
            if (_groupedRows > 0) grouped.Add(flops / Time(Grouped, minSeconds) / 1e9);
        }
        double g = Median(ours);
        var line = FormattableString.Invariant(
            $"{{\"op\":\"gemm\",\"form\":\"{c.Form}\",\"m\":{c.M},\"n\":{c.N},\"k\":{c.K},\"threads\":{threads},\"gflops\":{g:F1}");
        if (blas != null)
        {
            double o = Median(theirs);
            line += FormattableString.Invariant($",\"openblas_gflops\":{o:F1},\"ratio\":{g / o:F2}");
        }
        if (_groupedRows > 0)
            line += FormattableString.Invariant($",\"grouped_rows\":{_groupedRows},\"grouped_gflops\":{Median(grouped):F1},\"grouped_ratio\":{Median(grouped) / g:F2}");
        Console.WriteLine(line + FormattableString.Invariant($",\"median_of\":{rounds}}}"));
        if (_profileParts) ProfileParts(c, threads, Ours, minSeconds);
    }

    private static bool _profileParts;

    /// <summary>
    /// `--profile-parts`: the blocked product again under <see cref="GemmPartProfile"/>: per call, each thread's milliseconds
    /// packing B̃, packing Ã, in the micro-kernel loops and in its parts (the rest of a part: edge tiles, loop overhead), and
    /// the call's wall time; a thread's idle time is the wall time minus its parts.
    /// </summary>
    internal static void ProfileParts(Case c, int threads, Action ours, double minSeconds)
    {
        ours();
        GemmPartProfile.TakeAndReset();
        GemmPartProfile.Enabled = true;
        int calls = 0;
        long start = Stopwatch.GetTimestamp();
        try
        {
            do { ours(); calls++; } while (Stopwatch.GetElapsedTime(start).TotalSeconds < 3 * minSeconds);
        }
        finally { GemmPartProfile.Enabled = false; }
        double wallMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds / calls;
        var perThread = GemmPartProfile.TakeAndReset().OrderByDescending(t => t[3]).Select(t => FormattableString.Invariant(
            $"{{\"pack_b_ms\":{t[0] * 1e3 / calls:F3},\"pack_a_ms\":{t[1] * 1e3 / calls:F3},\"kernel_ms\":{t[2] * 1e3 / calls:F3},\"parts_ms\":{t[3] * 1e3 / calls:F3},\"parts\":{t[4] / calls:F2}}}"));
        Console.WriteLine(FormattableString.Invariant(
            $"{{\"op\":\"gemm_parts\",\"form\":\"{c.Form}\",\"m\":{c.M},\"n\":{c.N},\"k\":{c.K},\"threads\":{threads},\"parts_per_thread\":{GemmBlocking.PartsPerThread},\"wall_ms\":{wallMs:F3},\"calls\":{calls},\"per_thread\":[{string.Join(",", perThread)}]}}"));
    }

    /// <summary>
    /// With --cpu-time, one-thread cases are timed by the calling thread's CPU clock rather than the wall clock: on a
    /// machine shared with other jobs, time spent descheduled is not counted (cache and memory contention still are).
    /// </summary>
    private static bool _cpuTime;

    /// <summary>
    /// With --grouped-rows N, each case is also timed (alternating) with <see cref="GemmSkinny.MaxGroupedRows"/> = N, so a
    /// prefill shape can be compared on the blocked GEMM and on the skinny path's row groups in one run.
    /// </summary>
    private static int _groupedRows;

    /// <summary>The case in f32, then with both operands rounded to bf16 on the VDPBF16PS kernel and on the f32 kernel, round by round.</summary>
    private static void MeasureBf16(Case c, int threads, int rounds, double minSeconds)
    {
        int aCols = c.TransA ? c.M : c.K, bCols = c.TransB ? c.K : c.N;
        using var a = Random((c.TransA ? c.K : c.M) * (long)aCols, 1);
        using var b = Random((c.TransB ? c.N : c.K) * (long)bCols, 2);
        using var out1 = new NativeBuffer<float>((long)c.M * c.N);
        float* pa = a.Pointer, pb = b.Pointer, pc = out1.Pointer;
        Parallelism.MaxThreads = threads;
        var problem = new GemmProblem
        {
            A = GemmOperand.F32(pa, aCols, c.TransA).RoundedTo(DType.BF16), B = GemmOperand.F32(pb, bCols, c.TransB).RoundedTo(DType.BF16),
            C = pc, Ldc = c.N, M = c.M, N = c.N, K = c.K,
        };
        void F32() => Gemm.Compute(c.TransA, c.TransB, c.M, c.N, c.K, pa, aCols, pb, bCols, pc, c.N, false);
        void Rounded() => GemmDriver.Run(problem, Simd.Path);
        void RoundedF32Kernel()
        {
            using var off = Bf16Dot.Disable();
            GemmDriver.Run(problem, Simd.Path);
        }
        double flops = 2.0 * c.M * c.N * c.K;
        List<double> f32 = [], dot = [], f32Kernel = [];
        for (int round = 0; round < rounds; round++)
        {
            f32.Add(flops / Time(F32, minSeconds) / 1e9);
            dot.Add(flops / Time(Rounded, minSeconds) / 1e9);
            f32Kernel.Add(flops / Time(RoundedF32Kernel, minSeconds) / 1e9);
        }
        double g = Median(f32), d = Median(dot), r = Median(f32Kernel);
        Console.WriteLine(FormattableString.Invariant(
            $"{{\"op\":\"gemm_bf16\",\"form\":\"{c.Form}\",\"m\":{c.M},\"n\":{c.N},\"k\":{c.K},\"threads\":{threads},\"bf16_dot\":{Bf16Dot.Enabled.ToString().ToLowerInvariant()},") + FormattableString.Invariant(
            $"\"f32_gflops\":{g:F1},\"bf16_dot_gflops\":{d:F1},\"bf16_f32_kernel_gflops\":{r:F1},\"dot_over_f32\":{d / g:F2},\"dot_over_f32_kernel\":{d / r:F2},\"median_of\":{rounds}}}"));
    }

    /// <summary>The f32 and the VDPBF16PS micro-kernels alone: one 8-row Ã strip against 16 B̃ strips (768 columns), KC deep, alternating.</summary>
    private static int MeasureBf16Kernel(int rounds)
    {
        if (!Bf16Dot.Enabled)
        {
            Console.WriteLine("{\"op\":\"gemm_bf16_kernel\",\"skipped\":\"no AVX512-BF16 kernel on this machine\"}");
            return 0;
        }
        int kc = GemmBlocking.KC, strips = 16, rows = GemmKernels.Vector512Rows, cols = GemmKernels.Vector512Cols;
        using var a = Random((long)rows * kc, 1);
        using var b = Random((long)strips * cols * kc, 2);
        using var pa = Random((long)rows * kc, 1);
        using var pb = Random((long)strips * cols * kc, 2);
        Bf16Dot.ToPairs(pa.Pointer, kc, rows);
        for (int s = 0; s < strips; s++) Bf16Dot.ToPairs(pb.Pointer + (long)s * cols * kc, kc, cols);
        using var c = new NativeBuffer<float>((long)rows * cols * strips);
        float* ap = a.Pointer, bp = b.Pointer, pap = pa.Pointer, pbp = pb.Pointer, cp = c.Pointer;
        void F32()
        {
            for (int s = 0; s < strips; s++) GemmKernels.Vector512Kernel(ap, bp + (long)s * cols * kc, kc, cp + s * cols, cols * strips, s > 0);
        }
        void Dot()
        {
            for (int s = 0; s < strips; s++) Bf16Dot.Kernel(pap, pbp + (long)s * cols * kc, kc, cp + s * cols, cols * strips, s > 0);
        }
        double flops = 2.0 * rows * cols * strips * kc;
        List<double> f32 = [], dot = [];
        for (int round = 0; round < rounds; round++)
        {
            f32.Add(flops / Time(F32, 0.1) / 1e9);
            dot.Add(flops / Time(Dot, 0.1) / 1e9);
        }
        Console.WriteLine(FormattableString.Invariant(
            $"{{\"op\":\"gemm_bf16_kernel\",\"kc\":{kc},\"tile\":\"8x48\",\"f32_kernel_gflops\":{Median(f32):F1},\"bf16_dot_kernel_gflops\":{Median(dot):F1},\"ratio\":{Median(dot) / Median(f32):F2},\"median_of\":{rounds}}}"));
        return 0;
    }

    /// <summary>Seconds per call: one warm-up call, then as many calls as fill minSeconds.</summary>
    private static double Time(Action action, double minSeconds) => Time(action, minSeconds, _cpuTime);

    /// <summary>The same, timed by the calling thread's CPU clock when <paramref name="cpuTime"/> and the product runs on one thread.</summary>
    internal static double Time(Action action, double minSeconds, bool cpuTime)
    {
        action();
        bool cpu = cpuTime && Parallelism.MaxThreads == 1;
        double start = cpu ? ThreadCpuSeconds() : 0;
        long wallStart = Stopwatch.GetTimestamp();
        int calls = 0;
        double elapsed;
        do
        {
            action();
            calls++;
            elapsed = cpu ? ThreadCpuSeconds() - start : Stopwatch.GetElapsedTime(wallStart).TotalSeconds;
        } while (elapsed < minSeconds);
        return elapsed / calls;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec { public long Seconds, Nanoseconds; }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec time);

    /// <summary>CLOCK_THREAD_CPUTIME_ID (3 on Linux).</summary>
    internal static double ThreadCpuSeconds()
    {
        if (ClockGetTime(3, out var t) != 0) throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed.");
        return t.Seconds + t.Nanoseconds * 1e-9;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static NativeBuffer<float> Random(long length, int seed)
    {
        var buffer = new NativeBuffer<float>(length, clear: false);
        var rng = new Random(seed);
        var span = buffer.Span;
        for (int i = 0; i < span.Length; i++) span[i] = (float)(rng.NextDouble() * 2 - 1);
        return buffer;
    }

    /// <summary>cblas_sgemm from libopenblas.so.0 when installed; a measuring reference only, never a dependency.</summary>
    private sealed class OpenBlas
    {
        private const int RowMajor = 101, NoTrans = 111, Trans = 112;
        private readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemm;
        private readonly delegate* unmanaged<int, void> _setThreads;

        private OpenBlas(nint library)
        {
            _sgemm = (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)NativeLibrary.GetExport(library, "cblas_sgemm");
            _setThreads = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(library, "openblas_set_num_threads");
        }

        public static OpenBlas? TryLoad() => NativeLibrary.TryLoad("libopenblas.so.0", out var library) ? new OpenBlas(library) : null;

        public void SetThreads(int threads) => _setThreads(threads);

        public void Sgemm(bool transA, bool transB, int m, int n, int k, float* a, int lda, float* b, int ldb, float* c, int ldc)
            => _sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, 1f, a, lda, b, ldb, 0f, c, ldc);
    }
}
