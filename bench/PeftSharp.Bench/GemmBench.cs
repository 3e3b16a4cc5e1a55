using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `gemm [--threads 1,2] [--rounds 5] [--quick] [--only SUBSTRING] [--cpu-time] [--grouped-rows N] [--decode]`: GFLOP/s of <see cref="Gemm"/> on square, training and
/// LoRA shapes, alternating case by case with OpenBLAS's cblas_sgemm when libopenblas.so.0 is installed (run with
/// OPENBLAS_CORETYPE=SkylakeX to compare with its AVX-512 kernels). One JSON line per case, medians over rounds.
/// </summary>
public static unsafe class GemmBench
{
    private readonly record struct Case(string Form, int M, int N, int K, bool TransA, bool TransB);

    public static int Run(string[] args)
    {
        int rounds = 5;
        bool quick = false, decode = false;
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
                default:
                    Console.Error.WriteLine($"gemm: unknown option '{args[i]}' (expected --threads LIST, --rounds N, --quick, --only TEXT, --cpu-time, --grouped-rows N, --decode)");
                    return 1;
            }
        }
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
                Measure(c, threads, rounds, minSeconds, blas);
            }
        return 0;
    }

    private static IEnumerable<Case> Cases(bool quick)
    {
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

    /// <summary>Seconds per call: one warm-up call, then as many calls as fill minSeconds.</summary>
    private static double Time(Action action, double minSeconds)
    {
        action();
        bool cpu = _cpuTime && Parallelism.MaxThreads == 1;
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
    private static double ThreadCpuSeconds()
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
