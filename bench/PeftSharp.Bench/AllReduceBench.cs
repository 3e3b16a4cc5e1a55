using System.Diagnostics;
using System.Globalization;
using PeftSharp.Training.Distributed;

namespace PeftSharp.Bench;

/// <summary>
/// `mpirun -np N dotnet PeftSharp.Bench.dll allreduce [--floats 147456,81912576] [--iterations 5]`: the time of the
/// trainer's gradient all-reduce (in-place float sum over every rank, through <see cref="MpiCommunicator"/>) for each
/// size; rank 0 prints one JSON line per size (median seconds, bus bandwidth 2(N-1)/N·bytes/s as nccl-tests reports it).
/// </summary>
public static class AllReduceBench
{
    public static int Run(string[] args)
    {
        var sizes = new List<long> { 147_456, 81_912_576 };
        int iterations = 5;
        for (int i = 0; i + 1 < args.Length; i += 2)
            switch (args[i])
            {
                case "--floats": sizes = args[i + 1].Split(',').Select(long.Parse).ToList(); break;
                case "--iterations": iterations = int.Parse(args[i + 1], CultureInfo.InvariantCulture); break;
            }
        using var comm = DistributedRun.Start();
        foreach (long n in sizes)
        {
            var buffer = new float[n];
            buffer.AsSpan().Fill(comm.Rank + 1);
            var times = new List<double>();
            for (int it = 0; it <= iterations; it++)
            {
                var clock = Stopwatch.StartNew();
                comm.AllReduceSum(buffer.AsSpan());
                if (it > 0) times.Add(clock.Elapsed.TotalSeconds); // the first is a warm-up
            }
            times.Sort();
            double median = times[times.Count / 2], bytes = n * 4.0;
            if (comm.Rank == 0)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{{\"bench\":\"allreduce\",\"ranks\":{comm.Size},\"floats\":{n},\"mb\":{bytes / 1e6:F2},\"median_s\":{median:F5},\"bus_gbps\":{2.0 * (comm.Size - 1) / comm.Size * bytes * 8 / median / 1e9:F2}}}"));
        }
        return 0;
    }
}
