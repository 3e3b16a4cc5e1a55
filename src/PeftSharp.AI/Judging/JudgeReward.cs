using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using PeftSharp.Config;
using PeftSharp.Training.Rl;

namespace PeftSharp.AI.Judging;

/// <summary>
/// A GRPO reward from an LLM judge (grpo.reward_funcs entry <c>judge:FILE</c>): each completion is scored by asking the judge the
/// <c>template</c> with {prompt} and {completion} filled in; the answer must be a number in [min, max], which is the reward. Any
/// other answer (or a call that failed after its retries) is NaN, "does not apply", as TRL's None: it is counted and logged, never
/// guessed. Completions of a batch are asked concurrently, within the judge's concurrency bound; answers are cached.
/// </summary>
public sealed class JudgeReward : IRewardFunction
{
    private readonly ChatJudge _judge;
    private readonly string _template;
    private readonly TextWriter? _log;
    private long _unparseable, _scored;

    public JudgeReward(string name, ChatJudge judge, string template = JudgePrompts.Score, double min = 0, double max = 10, int maxTokens = 8, TextWriter? log = null)
    {
        Name = name;
        _judge = judge ?? throw new ArgumentNullException(nameof(judge));
        JudgePrompts.Check(template, ["prompt", "completion"], ["completion"], "reward.template");
        if (!(min < max)) throw new PeftSharpException($"reward.min ({min}) must be below reward.max ({max}).");
        _template = template;
        Min = min;
        Max = max;
        MaxTokens = maxTokens;
        _log = log;
    }

    public string Name { get; }
    public double Min { get; }
    public double Max { get; }
    public int MaxTokens { get; }
    public ChatJudge Judge => _judge;
    /// <summary>Completions whose answer was not a number in [min, max], or whose call failed: scored NaN.</summary>
    public long Unparseable => Interlocked.Read(ref _unparseable);
    public long Scored => Interlocked.Read(ref _scored);

    public double[] Score(IReadOnlyList<RewardInput> completions) =>
        Task.WhenAll(completions.Select(ScoreAsync)).GetAwaiter().GetResult();

    private async Task<double> ScoreAsync(RewardInput input)
    {
        string content = JudgePrompts.Format(_template, new Dictionary<string, string> { ["prompt"] = input.Prompt, ["completion"] = input.Completion }, "reward.template");
        string? raw = await _judge.AskAsync("score", content, MaxTokens).ConfigureAwait(false);
        double score = JudgePrompts.ParseScore(raw, Min, Max);
        if (double.IsNaN(score))
        {
            long n = Interlocked.Increment(ref _unparseable);
            if (n <= 5 || (n & (n - 1)) == 0) // the first few, then at powers of two
                _log?.WriteLine(raw == null
                    ? $"warning: {Name}: the judge call failed ({_judge.LastError}); the reward is NaN ({n} so far)."
                    : $"warning: {Name}: the judge answered {Quote(raw)}, not a number in [{Min.ToString(CultureInfo.InvariantCulture)}, {Max.ToString(CultureInfo.InvariantCulture)}]; the reward is NaN ({n} so far).");
        }
        else Interlocked.Increment(ref _scored);
        return score;
    }

    private static string Quote(string s) => JsonValue.Create(s.Length > 80 ? s[..80] + "…" : s)!.ToJsonString();

    public static SectionSpec Spec { get; } = new("reward", "the judge reward's question", [
        new("template", ValueKind.String, "the question, fields {prompt} and {completion} (default: a 0-10 score)"),
        new("min", ValueKind.Number, "the lowest valid score (default 0)"),
        new("max", ValueKind.Number, "the highest valid score (default 10)"),
        new("max_tokens", ValueKind.Int, "most tokens of the judge's answer (default 8)", Min: 1),
    ]);

    /// <summary>
    /// The reward a <c>judge:FILE</c> entry names: FILE holds a judge section (<see cref="JudgeSettings"/>) and a reward section
    /// (template, min, max, max_tokens). The client is added to <paramref name="owned"/>, which the caller disposes after training.
    /// </summary>
    public static JudgeReward FromFile(string path, string name, ICollection<IDisposable> owned, TextWriter? log = null)
    {
        var sections = ConfigSections.Load(path, [JudgeSettings.Spec, Spec], JudgeSettings.PathKeys);
        JudgeSettings settings;
        JudgeReward? reward = null;
        try { settings = JudgeSettings.Read(sections["judge"], Path.GetDirectoryName(Path.GetFullPath(path))); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{path}: {e.Message}"); }
        var (client, judge, cache) = settings.Build();
        owned.Add(client);
        owned.Add(cache);
        var r = sections["reward"];
        try { reward = new JudgeReward(name, judge, r.Str("template", JudgePrompts.Score)!, r.Num("min", 0), r.Num("max", 10), r.Int("max_tokens", 8), log); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{path}: {e.Message}"); }
        log?.WriteLine($"{name}: judge {settings.Describe()}");
        return reward;
    }
}
