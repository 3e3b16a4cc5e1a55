using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Text.Json;
using PeftSharp.Kernels;

namespace PeftSharp.Bench;

/// <summary>
/// `peak [--threads 1,2] [--seconds 0.5] [--rounds 5]`: the fp32 FMA peak this machine delivers today, measured rather than
/// taken from a data sheet: 24 independent Vector512 fused multiply-add chains per thread (more than FMA latency ×
/// throughput, so the units never wait), on the kernels' own worker pool. GFLOP/s = 2 × 16 lanes × FMAs / s, best and
/// median of the rounds. The denominator of every "share of FMA peak" in docs/PERFORMANCE.md, measured in the same run.
/// </summary>
public static unsafe class PeakBench
{
    public static int Run(string[] args)
    {
        var threads = ModelBench.Option(args, "--threads", "1,2").Split(',').Select(int.Parse).ToArray();
        double seconds = double.Parse(ModelBench.Option(args, "--seconds", "0.5"), System.Globalization.CultureInfo.InvariantCulture);
        int rounds = int.Parse(ModelBench.Option(args, "--rounds", "5"));
        foreach (int t in threads)
        {
            var gflops = Enumerable.Range(0, rounds).Select(_ => Measure(t, seconds)).Order().ToArray();
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                bench = "peak",
                threads = t,
                fma_gflops_best = Math.Round(gflops[^1], 1),
                fma_gflops_median = Math.Round(gflops[gflops.Length / 2], 1),
                rounds,
            }));
        }
        return 0;
    }

    private struct Job
    {
        public long Iterations;
        public fixed double Sink[64];
    }

    private static double Measure(int threads, double seconds)
    {
        // Calibrate the iteration count on one thread, then run every thread for about `seconds`.
        long iterations = 1 << 16;
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            Chains(iterations);
            if (Stopwatch.GetElapsedTime(start).TotalSeconds > seconds / 4) break;
            iterations *= 2;
        }
        var job = new Job { Iterations = iterations * 4 };
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            long start = Stopwatch.GetTimestamp();
            Parallelism.For(threads, &RunPart, &job);
            double elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
            return threads * job.Iterations * 24.0 * 16 * 2 / elapsed / 1e9;
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    private static void RunPart(int part, void* state)
    {
        ref var job = ref *(Job*)state;
        job.Sink[part] = Chains(job.Iterations);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Chains(long iterations)
    {
        var m = Vector512.Create(0.999999f);
        var a = Vector512.Create(1e-7f);
        Vector512<float> c0 = Vector512.Create(1f), c1 = c0 + a, c2 = c1 + a, c3 = c2 + a, c4 = c3 + a, c5 = c4 + a,
            c6 = c5 + a, c7 = c6 + a, c8 = c7 + a, c9 = c8 + a, c10 = c9 + a, c11 = c10 + a, c12 = c11 + a, c13 = c12 + a,
            c14 = c13 + a, c15 = c14 + a, c16 = c15 + a, c17 = c16 + a, c18 = c17 + a, c19 = c18 + a, c20 = c19 + a,
            c21 = c20 + a, c22 = c21 + a, c23 = c22 + a;
        for (long i = 0; i < iterations; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(c0, m, a); c1 = Vector512.FusedMultiplyAdd(c1, m, a); c2 = Vector512.FusedMultiplyAdd(c2, m, a);
            c3 = Vector512.FusedMultiplyAdd(c3, m, a); c4 = Vector512.FusedMultiplyAdd(c4, m, a); c5 = Vector512.FusedMultiplyAdd(c5, m, a);
            c6 = Vector512.FusedMultiplyAdd(c6, m, a); c7 = Vector512.FusedMultiplyAdd(c7, m, a); c8 = Vector512.FusedMultiplyAdd(c8, m, a);
            c9 = Vector512.FusedMultiplyAdd(c9, m, a); c10 = Vector512.FusedMultiplyAdd(c10, m, a); c11 = Vector512.FusedMultiplyAdd(c11, m, a);
            c12 = Vector512.FusedMultiplyAdd(c12, m, a); c13 = Vector512.FusedMultiplyAdd(c13, m, a); c14 = Vector512.FusedMultiplyAdd(c14, m, a);
            c15 = Vector512.FusedMultiplyAdd(c15, m, a); c16 = Vector512.FusedMultiplyAdd(c16, m, a); c17 = Vector512.FusedMultiplyAdd(c17, m, a);
            c18 = Vector512.FusedMultiplyAdd(c18, m, a); c19 = Vector512.FusedMultiplyAdd(c19, m, a); c20 = Vector512.FusedMultiplyAdd(c20, m, a);
            c21 = Vector512.FusedMultiplyAdd(c21, m, a); c22 = Vector512.FusedMultiplyAdd(c22, m, a); c23 = Vector512.FusedMultiplyAdd(c23, m, a);
        }
        var sum = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11)) + ((c12 + c13) + (c14 + c15))
                  + ((c16 + c17) + (c18 + c19)) + ((c20 + c21) + (c22 + c23));
        return Vector512.Sum(sum);
    }
}
