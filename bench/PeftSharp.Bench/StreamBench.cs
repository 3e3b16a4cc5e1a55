using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Text.Json;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `stream [--mib 256] [--threads 1,2] [--iterations 10]`: STREAM-style memory bandwidth (McCalpin's copy c = a,
/// scale b = s·c, add c = a + b, triad a = b + s·c) over three float arrays of --mib MiB each (far larger than any
/// cache), plus `read` (a sum over one array: loads only, what streaming weights through a GEMV does). Each kernel's
/// arrays are split into one contiguous part per thread on the kernels' own worker pool. Bytes are counted as STREAM
/// counts them (copy and scale 2 arrays, add and triad 3, read 1; no write-allocate traffic). JSON line per thread
/// count and kernel: best (STREAM's figure) and median GB/s (10⁹ bytes/s) over the iterations after one warm-up.
/// </summary>
public static unsafe class StreamBench
{
    public static int Run(string[] args)
    {
        long mib = long.Parse(ModelBench.Option(args, "--mib", "256"));
        int iterations = int.Parse(ModelBench.Option(args, "--iterations", "10"));
        var threads = ModelBench.Option(args, "--threads", "1,2").Split(',').Select(int.Parse).ToArray();
        foreach (int t in threads)
            foreach (var result in Measure(mib, t, iterations))
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    bench = "stream",
                    kernel = result.Kernel,
                    threads = t,
                    array_mib = mib,
                    iterations,
                    best_gbs = Math.Round(result.BestGbs, 2),
                    median_gbs = Math.Round(result.MedianGbs, 2),
                }));
        return 0;
    }

    public sealed record Result(string Kernel, double BestGbs, double MedianGbs);

    public static readonly string[] Kernels = ["copy", "scale", "add", "triad", "read"];

    /// <summary>Every kernel, <paramref name="iterations"/> timed runs each after a warm-up, on <paramref name="threads"/> threads.</summary>
    public static IReadOnlyList<Result> Measure(long mib, int threads, int iterations)
    {
        long n = mib * (1 << 20) / sizeof(float);
        using var a = new NativeBuffer<float>(n, clear: false);
        using var b = new NativeBuffer<float>(n, clear: false);
        using var c = new NativeBuffer<float>(n, clear: false);
        new Span<float>(a.Pointer, (int)n).Fill(1f);
        new Span<float>(b.Pointer, (int)n).Fill(2f);
        new Span<float>(c.Pointer, (int)n).Fill(0f);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            var results = new List<Result>();
            for (int kernel = 0; kernel < Kernels.Length; kernel++)
            {
                var job = new Job { A = a.Pointer, B = b.Pointer, C = c.Pointer, N = n, Parts = threads, Kernel = kernel };
                double bytes = n * sizeof(float) * (kernel switch { 0 or 1 => 2, 2 or 3 => 3, _ => 1 });
                var gbs = new double[iterations];
                for (int i = -1; i < iterations; i++)
                {
                    long start = Stopwatch.GetTimestamp();
                    Parallelism.For(threads, &RunPart, &job);
                    double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                    if (i >= 0) gbs[i] = bytes / seconds / 1e9;
                }
                Array.Sort(gbs);
                results.Add(new Result(Kernels[kernel], gbs[^1], gbs[iterations / 2]));
            }
            return results;
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    private struct Job
    {
        public float* A, B, C;
        public long N;
        public int Parts, Kernel;
        public double Sink;
    }

    private static void RunPart(int part, void* state)
    {
        ref var job = ref *(Job*)state;
        long i0 = job.N * part / job.Parts / 64 * 64, i1 = part == job.Parts - 1 ? job.N : job.N * (part + 1) / job.Parts / 64 * 64;
        float* a = job.A, b = job.B, c = job.C;
        var s = Vector512.Create(3f);
        switch (job.Kernel)
        {
            case 0:
                for (long i = i0; i < i1; i += 16) Vector512.Store(Vector512.Load(a + i), c + i);
                break;
            case 1:
                for (long i = i0; i < i1; i += 16) Vector512.Store(s * Vector512.Load(c + i), b + i);
                break;
            case 2:
                for (long i = i0; i < i1; i += 16) Vector512.Store(Vector512.Load(a + i) + Vector512.Load(b + i), c + i);
                break;
            case 3:
                for (long i = i0; i < i1; i += 16) Vector512.Store(Vector512.FusedMultiplyAdd(s, Vector512.Load(c + i), Vector512.Load(b + i)), a + i);
                break;
            default:
                // Four independent sums, so the loads and not the add latency bound it (as a GEMV's accumulators do).
                Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
                for (long i = i0; i < i1; i += 64)
                {
                    s0 += Vector512.Load(a + i);
                    s1 += Vector512.Load(a + i + 16);
                    s2 += Vector512.Load(a + i + 32);
                    s3 += Vector512.Load(a + i + 48);
                }
                if (Vector512.Sum(s0 + s1 + s2 + s3) == 42f) job.Sink++;   // keeps the reads
                break;
        }
    }
}
