using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using PeftSharp.Fuzz;

namespace PeftSharp.Bench;

/// <summary>
/// `fuzz [--cases N] [--seed S] [--case-timeout SECONDS] [--chunk N]`: issue 19's long fuzz run over every
/// parser (the corpus of tests/PeftSharp.Tests/Hostile/Fuzz/FuzzHarness.cs). Cases run in child processes of
/// --chunk cases each, so a process abort (a stack overflow cannot be caught in .NET) is seen, counted as a
/// crash of the case that was running, and the run goes on after it. A case past --case-timeout is a hang:
/// the child reports it and exits, and the next child resumes after it. Prints one JSON line per crash or
/// hang and a summary line: cases, accepted, user errors, crashes, hangs, aborts, the slowest case and the
/// largest managed allocation of one case, and the children's peak working set.
/// </summary>
public static class FuzzBench
{
    public static int Run(string[] args)
    {
        int cases = 10_000, seed = 19, chunk = 1000, from = 0, to = -1;
        double timeout = 10;
        bool child = false, assets = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--cases" when i + 1 < args.Length: cases = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--seed" when i + 1 < args.Length: seed = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--chunk" when i + 1 < args.Length: chunk = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--case-timeout" when i + 1 < args.Length: timeout = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--real-tokenizers": assets = true; break;
                case "--child" when i + 2 < args.Length:
                    child = true;
                    from = int.Parse(args[++i], CultureInfo.InvariantCulture);
                    to = int.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                default:
                    Console.Error.WriteLine("usage: fuzz [--cases N] [--seed S] [--case-timeout SECONDS] [--chunk N] [--real-tokenizers]");
                    return 1;
            }
        }
        return child ? RunChild(from, to, seed, TimeSpan.FromSeconds(timeout), assets) : RunParent(cases, seed, chunk, timeout, assets);
    }

    /// <summary>Runs cases [from, to); one JSON line per case: index, target, verdict, seconds, allocated bytes (and the message of a crash).</summary>
    private static int RunChild(int from, int to, int seed, TimeSpan timeout, bool realTokenizers)
    {
        // --real-tokenizers: the tokenizer.json files of ../shared/assets (gpt2, qwen and llama3's Split regexes...) join the seeds.
        var extra = realTokenizers
            ? Directory.GetDirectories(Path.Combine(TokenizerBench.AssetsRoot(), "tokenizers")).Order(StringComparer.Ordinal)
                .Select(d => Path.Combine(d, "tokenizer.json")).Where(File.Exists).ToList()
            : [];
        using var harness = new FuzzHarness(Path.Combine(Path.GetTempPath(), $"peftsharp-fuzz-{Environment.ProcessId}"), extra);
        for (int i = from; i < to; i++)
        {
            int index = i;
            var task = Task.Factory.StartNew(() => harness.Run(index, seed), TaskCreationOptions.LongRunning);
            if (!task.Wait(timeout))
            {
                Console.WriteLine(JsonSerializer.Serialize(new { index, target = FuzzHarness.Targets[index % FuzzHarness.Targets.Length], verdict = "Hang" }));
                Console.Out.Flush();
                Environment.Exit(3);
            }
            var o = task.Result;
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                index, target = o.Target, verdict = o.Verdict.ToString(), seconds = o.Seconds, allocated = o.AllocatedBytes,
                mutation = o.Mutation, message = o.Verdict == FuzzVerdict.Crash ? o.Message : o.Message?[..Math.Min(o.Message.Length, 300)],
            }));
        }
        Console.Out.Flush();
        return 0;
    }

    private static int RunParent(int cases, int seed, int chunk, double timeout, bool realTokenizers)
    {
        string self = Environment.ProcessPath!;
        string? dll = self.EndsWith("dotnet", StringComparison.Ordinal) ? typeof(FuzzBench).Assembly.Location : null;
        int accepted = 0, userErrors = 0, crashes = 0, hangs = 0, aborts = 0;
        long maxAllocated = 0, peakWorkingSet = 0;
        double maxSeconds = 0;
        string slowest = "", largest = "";
        var clock = Stopwatch.StartNew();
        int next = 0;
        while (next < cases)
        {
            int end = Math.Min(cases, next + chunk);
            var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
            if (dll != null) start.ArgumentList.Add(dll);
            foreach (var a in (string[])["fuzz", "--child", next.ToString(CultureInfo.InvariantCulture), end.ToString(CultureInfo.InvariantCulture),
                         "--seed", seed.ToString(CultureInfo.InvariantCulture), "--case-timeout", timeout.ToString(CultureInfo.InvariantCulture)])
                start.ArgumentList.Add(a);
            if (realTokenizers) start.ArgumentList.Add("--real-tokenizers");
            using var process = Process.Start(start)!;
            int last = next - 1;
            string? line;
            while ((line = process.StandardOutput.ReadLine()) != null)
            {
                using var doc = JsonDocument.Parse(line);
                var r = doc.RootElement;
                last = r.GetProperty("index").GetInt32();
                string verdict = r.GetProperty("verdict").GetString()!;
                switch (verdict)
                {
                    case "Accepted": accepted++; break;
                    case "UserError": userErrors++; break;
                    case "Crash": crashes++; Console.WriteLine(line); break;
                    case "Hang": hangs++; Console.WriteLine(line); break;
                }
                if (verdict != "Hang")
                {
                    double seconds = r.GetProperty("seconds").GetDouble();
                    long allocated = r.GetProperty("allocated").GetInt64();
                    if (seconds > maxSeconds) { maxSeconds = seconds; slowest = $"{last} ({r.GetProperty("target").GetString()})"; }
                    if (allocated > maxAllocated) { maxAllocated = allocated; largest = $"{last} ({r.GetProperty("target").GetString()})"; }
                }
                try { peakWorkingSet = Math.Max(peakWorkingSet, process.PeakWorkingSet64); } catch (InvalidOperationException) { }
            }
            process.WaitForExit();
            if (process.ExitCode != 0 && process.ExitCode != 3)
            {
                aborts++;
                Console.WriteLine(JsonSerializer.Serialize(new { index = last + 1, verdict = "Abort", exitCode = process.ExitCode }));
                last++;
            }
            next = last + 1;
        }
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "fuzz", cases, seed, realTokenizers, targets = FuzzHarness.Targets.Length, accepted, userErrors, crashes, hangs, aborts,
            caseTimeoutSeconds = timeout, slowestCaseSeconds = Math.Round(maxSeconds, 3), slowestCase = slowest,
            maxAllocatedBytes = maxAllocated, largestAllocationCase = largest, childPeakWorkingSetBytes = peakWorkingSet,
            wallSeconds = Math.Round(clock.Elapsed.TotalSeconds, 1),
        }));
        return crashes + hangs + aborts == 0 ? 0 : 2;
    }
}
