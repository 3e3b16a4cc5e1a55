using PeftSharp.Fuzz;

namespace PeftSharp.Tests.Hostile.Fuzz;

/// <summary>
/// Issue 19's fuzz suite in CI: a bounded, fixed-seed slice of the corpus (every parser), each case within a
/// time limit; only PeftSharpException may escape. The long run (10,000+ cases, figures in docs/ROBUSTNESS.md)
/// is `dotnet run -c Release --project bench/PeftSharp.Bench -- fuzz`.
/// </summary>
public sealed class FuzzTests : IDisposable
{
    private const int Cases = 330;
    private static readonly TimeSpan CaseLimit = TimeSpan.FromSeconds(15);
    private readonly FuzzHarness _harness = new(Path.Combine(Path.GetTempPath(), "peftsharp-fuzz-" + Guid.NewGuid().ToString("N")));

    public void Dispose() => _harness.Dispose();

    [Fact]
    public async Task Mutated_inputs_to_every_parser_give_user_errors_only()
    {
        var crashes = new List<string>();
        var verdicts = new Dictionary<string, int[]>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < Cases; i++)
        {
            var task = Task.Factory.StartNew(() => _harness.Run(i, seed: 19), TaskCreationOptions.LongRunning);
            if (await Task.WhenAny(task, Task.Delay(CaseLimit)) != task) { crashes.Add($"case {i} ({FuzzHarness.Targets[i % FuzzHarness.Targets.Length]}): no result within {CaseLimit.TotalSeconds} s"); break; }
            var outcome = await task;
            if (!verdicts.TryGetValue(outcome.Target, out var counts)) verdicts[outcome.Target] = counts = new int[3];
            counts[(int)outcome.Verdict]++;
            if (outcome.Verdict == FuzzVerdict.Crash) crashes.Add($"case {i} ({outcome.Target}; {outcome.Mutation}): {outcome.Message}");
            if (outcome.AllocatedBytes > 1L << 30) crashes.Add($"case {i} ({outcome.Target}; {outcome.Mutation}): allocated {outcome.AllocatedBytes:N0} bytes");
        }
        Assert.True(crashes.Count == 0, string.Join("\n\n", crashes.Take(10)));
        // Every target ran, and the mutations reached the parsers (some accepted, some refused).
        Assert.Equal(FuzzHarness.Targets.Length, verdicts.Count);
        Assert.All(verdicts, v => Assert.True(v.Value[(int)FuzzVerdict.UserError] > 0, $"{v.Key}: no mutation was refused"));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(120), $"the fuzz slice took {clock.Elapsed}");
    }
}
