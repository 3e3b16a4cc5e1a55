using System.ClientModel;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.AI;

namespace PeftSharp.AI.Judging;

/// <summary>How a <see cref="ChatJudge"/> asks and what it tolerates.</summary>
public sealed record JudgeOptions
{
    /// <summary>The judge's identity in the cache and the output (e.g. openai:gpt-4o@https://api.openai.com/v1); part of every cache key.</summary>
    public string Name { get; init; } = "judge";
    /// <summary><see cref="ChatOptions.ModelId"/> of each request (an OpenAI model name, or a PeftSharp adapter name); null: the client's default.</summary>
    public string? ModelId { get; init; }
    /// <summary>The pairwise template: fields {prompt}, {response0}, {response1} (TRL's default).</summary>
    public string PairwiseTemplate { get; init; } = JudgePrompts.Pairwise;
    /// <summary>The rank template: fields {prompt}, {outputs}.</summary>
    public string RankTemplate { get; init; } = JudgePrompts.Rank;
    /// <summary>Most tokens of a pairwise answer (TRL asks for 1); a rank answer gets 4 per answer ranked.</summary>
    public int PairwiseMaxTokens { get; init; } = 1;
    /// <summary>With <see cref="RankByScore"/>: the question about one answer, fields {prompt} and {completion}, answered by a number.</summary>
    public string ScoreTemplate { get; init; } = JudgePrompts.Score;
    /// <summary>With <see cref="RankByScore"/>: the valid scores; any other answer is unparseable.</summary>
    public double ScoreMin { get; init; }
    public double ScoreMax { get; init; } = 10;
    /// <summary>With <see cref="RankByScore"/>: most tokens of a score answer.</summary>
    public int ScoreMaxTokens { get; init; } = 8;
    public float Temperature { get; init; }
    /// <summary>Calls in flight at once.</summary>
    public int MaxConcurrency { get; init; } = 4;
    /// <summary>Further tries after a transient failure (HTTP 408/429/5xx, a connection error, a timeout).</summary>
    public int MaxRetries { get; init; } = 3;
    /// <summary>Each try's time limit.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>The wait before the first retry; each further retry waits twice as long (plus up to 25% jitter).</summary>
    public TimeSpan Backoff { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>TRL's shuffle_order: show each pair in a random (seeded, per question) order and map the answer back, against position bias.</summary>
    public bool ShuffleOrder { get; init; } = true;
    /// <summary>Ask each pair in both orders; when the two answers disagree (the judge picked a position, not an answer) the pair is a tie.</summary>
    public bool BothOrders { get; init; }
    /// <summary>How more than two answers are ranked: <see cref="RankByPrompt"/> (one call with <see cref="RankTemplate"/>) or <see cref="RankByRoundRobin"/>.</summary>
    public string Ranking { get; init; } = RankByPrompt;
    /// <summary>With <see cref="RankByRoundRobin"/>: a ranking only when its worst answer lost every game (a clear loser), else a tie.</summary>
    public bool WorstLostAll { get; init; }
    public ulong Seed { get; init; }

    /// <summary>One rank prompt lists every answer and the judge answers with the whole order (a judge that can follow it).</summary>
    public const string RankByPrompt = "prompt";
    /// <summary>
    /// Every pair of answers through the pairwise prompt (both orders with <see cref="BothOrders"/>), ranked by wins − losses
    /// (Copeland's count); only the pairwise answer is asked, so a judge fine-tuned for pairs can rank K answers.
    /// </summary>
    public const string RankByRoundRobin = "round_robin";
    /// <summary>
    /// Each answer on its own through <see cref="ScoreTemplate"/> (a pointwise judge, as a reward model scores), ranked by score: a
    /// judge fine-tuned to grade one answer needs K calls for K answers instead of a round robin's K(K − 1)/2 pairs.
    /// </summary>
    public const string RankByScore = "score";
    public static readonly string[] Rankings = [RankByPrompt, RankByRoundRobin, RankByScore];

    public void Validate()
    {
        if (MaxConcurrency < 1) throw new PeftSharpException($"judge.max_concurrency must be at least 1, got {MaxConcurrency}.");
        if (MaxRetries < 0) throw new PeftSharpException($"judge.max_retries must be 0 or more, got {MaxRetries}.");
        if (Timeout <= TimeSpan.Zero) throw new PeftSharpException("judge.timeout must be above 0 seconds.");
        if (PairwiseMaxTokens < 1) throw new PeftSharpException("judge.max_tokens must be at least 1.");
        if (!Rankings.Contains(Ranking)) throw new PeftSharpException($"judge.ranking must be {string.Join(" or ", Rankings)}, got '{Ranking}'.");
        if (WorstLostAll && Ranking != RankByRoundRobin) throw new PeftSharpException($"judge.worst_lost_all is for judge.ranking: {RankByRoundRobin}, but judge.ranking is {Ranking}.");
        JudgePrompts.Check(PairwiseTemplate, ["prompt", "response0", "response1"], ["response0", "response1"], "judge.system_prompt");
        JudgePrompts.Check(RankTemplate, ["prompt", "outputs"], ["outputs"], "judge.rank_prompt");
        JudgePrompts.Check(ScoreTemplate, ["prompt", "completion"], ["completion"], "judge.score_prompt");
        if (!(ScoreMin < ScoreMax)) throw new PeftSharpException($"judge.score_min ({ScoreMin.ToString(CultureInfo.InvariantCulture)}) must be below judge.score_max ({ScoreMax.ToString(CultureInfo.InvariantCulture)}).");
        if (ScoreMaxTokens < 1) throw new PeftSharpException("judge.max_tokens must be at least 1.");
    }
}

/// <summary>What a judge run did: calls paid, cache hits, retries, and the questions that gave no verdict.</summary>
public sealed class JudgeCounts
{
    private long _calls, _cacheHits, _retries, _unparseable, _failed, _ties;
    public long Calls => Interlocked.Read(ref _calls);
    public long CacheHits => Interlocked.Read(ref _cacheHits);
    public long Retries => Interlocked.Read(ref _retries);
    /// <summary>Answers that were not a verdict (skipped, never guessed).</summary>
    public long Unparseable => Interlocked.Read(ref _unparseable);
    /// <summary>Questions whose every try failed.</summary>
    public long Failed => Interlocked.Read(ref _failed);
    /// <summary>Questions with no preference: identical answers, or answers that flip with the order shown.</summary>
    public long Ties => Interlocked.Read(ref _ties);
    internal void Call() => Interlocked.Increment(ref _calls);
    internal void CacheHit() => Interlocked.Increment(ref _cacheHits);
    internal void Retry() => Interlocked.Increment(ref _retries);
    internal void NotParsed() => Interlocked.Increment(ref _unparseable);
    internal void Fail() => Interlocked.Increment(ref _failed);
    internal void Tie() => Interlocked.Increment(ref _ties);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Calls} judge calls, {CacheHits} cache hits, {Retries} retries, {Unparseable} unparseable, {Ties} ties, {Failed} failed");
}

/// <summary>A pairwise verdict: 0 or 1 (the better of the two answers as given), or −1 with <see cref="Outcome"/> saying why there is none.</summary>
public sealed record PairVerdict(int Choice, JudgeOutcome Outcome, string Raw);

/// <summary>A rank verdict: indices into the answers as given, best first; null with <see cref="Outcome"/> saying why there is none.</summary>
public sealed record RankVerdict(int[]? Ranking, JudgeOutcome Outcome, string Raw);

public enum JudgeOutcome { Judged, Unparseable, Tie, Failed }

/// <summary>
/// An AI judge over any <see cref="IChatClient"/> (a PeftSharp model in process, or an OpenAI-compatible endpoint), with TRL's
/// conventions (BasePairwiseJudge / BaseRankJudge; OpenAIPairwiseJudge's prompt sent as the user message, its "0"/"1" answer,
/// −1 when the answer is neither, shuffle_order). Calls are bounded in concurrency, retried with exponential back-off on
/// transient errors, time out, and are cached (<see cref="JudgeCache"/>) by judge, template and question. Thread-safe.
/// </summary>
public sealed class ChatJudge
{
    private readonly IChatClient _client;
    private readonly JudgeCache _cache;
    private readonly SemaphoreSlim _slots;

    public ChatJudge(IChatClient client, JudgeOptions options, JudgeCache? cache = null)
    {
        _client = client ?? throw new ArgumentNullException(nameof(client));
        Options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        _cache = cache ?? new JudgeCache(null);
        _slots = new SemaphoreSlim(options.MaxConcurrency, options.MaxConcurrency);
    }

    public JudgeOptions Options { get; }
    public JudgeCounts Counts { get; } = new();

    /// <summary>
    /// Which of <paramref name="answer0"/> and <paramref name="answer1"/> better answers <paramref name="prompt"/>. Identical answers
    /// are a tie without a call; <paramref name="index"/> keys the shuffle (the same question is shown the same way on a rerun, so it hits the cache).
    /// </summary>
    public async Task<PairVerdict> JudgePairAsync(string prompt, string answer0, string answer1, long index = 0, CancellationToken cancellation = default)
    {
        if (string.Equals(answer0.Trim(), answer1.Trim(), StringComparison.Ordinal))
        {
            Counts.Tie();
            return new PairVerdict(-1, JudgeOutcome.Tie, "");
        }
        if (Options.BothOrders)
        {
            var (first, raw0) = await AskPairAsync(prompt, answer0, answer1, cancellation).ConfigureAwait(false);
            if (first < 0) return Missing(first, raw0);
            var (second, raw1) = await AskPairAsync(prompt, answer1, answer0, cancellation).ConfigureAwait(false);
            if (second < 0) return Missing(second, raw1);
            string raw = raw0 + " | " + raw1;
            if (first != 1 - second)
            {
                Counts.Tie();
                return new PairVerdict(-1, JudgeOutcome.Tie, raw);
            }
            return new PairVerdict(first, JudgeOutcome.Judged, raw);
        }
        bool flip = Options.ShuffleOrder && Flip(index);
        var (choice, text) = flip
            ? await AskPairAsync(prompt, answer1, answer0, cancellation).ConfigureAwait(false)
            : await AskPairAsync(prompt, answer0, answer1, cancellation).ConfigureAwait(false);
        if (choice < 0) return Missing(choice, text);
        return new PairVerdict(flip ? 1 - choice : choice, JudgeOutcome.Judged, text);

        static PairVerdict Missing(int code, string raw) => new(-1, code == FailedCode ? JudgeOutcome.Failed : JudgeOutcome.Unparseable, raw);
    }

    /// <summary>
    /// <paramref name="answers"/> ranked best first (indices into the list). Two answers go through the pairwise prompt; more through
    /// the rank prompt, shown in a seeded shuffled order when <see cref="JudgeOptions.ShuffleOrder"/>, or, with
    /// <see cref="JudgeOptions.RankByRoundRobin"/>, through a round robin of pairwise verdicts. Identical answers are judged once
    /// (the first of each text stands for the others, which follow it); fewer than two distinct answers are a tie without a call.
    /// </summary>
    public async Task<RankVerdict> RankAsync(string prompt, IReadOnlyList<string> answers, long index = 0, CancellationToken cancellation = default)
    {
        var distinct = new List<int>();
        for (int i = 0; i < answers.Count; i++)
            if (!distinct.Any(d => string.Equals(answers[d].Trim(), answers[i].Trim(), StringComparison.Ordinal))) distinct.Add(i);
        if (distinct.Count < 2)
        {
            Counts.Tie();
            return new RankVerdict(null, JudgeOutcome.Tie, "");
        }
        int[] order;
        string raw;
        if (Options.Ranking == JudgeOptions.RankByScore)
        {
            var graded = await ScoreRankAsync(prompt, answers, distinct, cancellation).ConfigureAwait(false);
            if (graded.Ranking == null) return graded;
            (order, raw) = (graded.Ranking, graded.Raw);
        }
        else if (distinct.Count == 2)
        {
            var pair = await JudgePairAsync(prompt, answers[distinct[0]], answers[distinct[1]], index, cancellation).ConfigureAwait(false);
            if (pair.Choice < 0) return new RankVerdict(null, pair.Outcome, pair.Raw);
            order = pair.Choice == 0 ? [distinct[0], distinct[1]] : [distinct[1], distinct[0]];
            raw = pair.Raw;
        }
        else if (Options.Ranking == JudgeOptions.RankByRoundRobin)
        {
            var tournament = await RoundRobinAsync(prompt, answers, distinct, index, cancellation).ConfigureAwait(false);
            if (tournament.Ranking == null) return tournament;
            (order, raw) = (tournament.Ranking, tournament.Raw);
        }
        else
        {
            var shown = distinct.ToArray();
            if (Options.ShuffleOrder)
            {
                var rng = new Tensors.Rng(Tensors.Rng.FoldIn(Options.Seed, unchecked((ulong)index) ^ 0x72616E6BUL));
                for (int i = shown.Length - 1; i > 0; i--)
                {
                    int j = rng.NextInt(i + 1);
                    (shown[i], shown[j]) = (shown[j], shown[i]);
                }
            }
            string content = JudgePrompts.Format(Options.RankTemplate, new Dictionary<string, string>
            {
                ["prompt"] = prompt, ["outputs"] = JudgePrompts.RankOutputs(shown.Select(i => answers[i]).ToList()),
            }, "judge.rank_prompt");
            var text = await AskAsync("rank", content, 4 * shown.Length, cancellation).ConfigureAwait(false);
            if (text == null) return new RankVerdict(null, JudgeOutcome.Failed, "");
            var ranking = JudgePrompts.ParseRanking(text, shown.Length);
            if (ranking == null)
            {
                Counts.NotParsed();
                return new RankVerdict(null, JudgeOutcome.Unparseable, text);
            }
            order = ranking.Select(r => shown[r]).ToArray();
            raw = text;
        }
        // Duplicates follow the answer whose text they share.
        var full = new List<int>(answers.Count);
        foreach (int d in order)
            for (int i = 0; i < answers.Count; i++)
                if (string.Equals(answers[i].Trim(), answers[d].Trim(), StringComparison.Ordinal)) full.Add(i);
        return new RankVerdict(full.ToArray(), JudgeOutcome.Judged, raw);
    }

    /// <summary>
    /// The round robin of <see cref="JudgeOptions.RankByRoundRobin"/> over the <paramref name="distinct"/> answers: every pair judged
    /// (a pair that flips with the order under <see cref="JudgeOptions.BothOrders"/> is a draw), ranked by wins − losses, ties kept
    /// in the order given. The best and the worst must differ in score and the best must have beaten the worst itself (and, with
    /// <see cref="JudgeOptions.WorstLostAll"/>, the worst must have lost every game), else the prompt is a tie; an unparseable or failed pair makes the prompt so (never guessed). Raw: each pair's "iVj:answer", then the scores.
    /// </summary>
    private async Task<RankVerdict> RoundRobinAsync(string prompt, IReadOnlyList<string> answers, List<int> distinct, long index, CancellationToken cancellation)
    {
        var games = new List<(int A, int B)>();
        for (int a = 0; a < distinct.Count; a++)
            for (int b = a + 1; b < distinct.Count; b++) games.Add((a, b));
        var verdicts = await Task.WhenAll(games.Select((g, n) => JudgePairAsync(prompt, answers[distinct[g.A]], answers[distinct[g.B]],
            unchecked((long)Tensors.Rng.FoldIn(unchecked((ulong)index), (ulong)n)), cancellation))).ConfigureAwait(false);
        var score = new int[distinct.Count];
        var beat = new bool[distinct.Count, distinct.Count];
        var raws = new List<string>(games.Count + 1);
        for (int n = 0; n < games.Count; n++)
        {
            var (a, b) = games[n];
            var v = verdicts[n];
            raws.Add($"{distinct[a]}v{distinct[b]}:{v.Raw}");
            if (v.Outcome is JudgeOutcome.Unparseable or JudgeOutcome.Failed) return new RankVerdict(null, v.Outcome, string.Join("; ", raws));
            if (v.Outcome == JudgeOutcome.Tie) continue;
            var (winner, loser) = v.Choice == 0 ? (a, b) : (b, a);
            score[winner]++;
            score[loser]--;
            beat[winner, loser] = true;
        }
        var order = Enumerable.Range(0, distinct.Count).OrderByDescending(i => score[i]).ToArray();
        raws.Add("scores " + string.Join(",", Enumerable.Range(0, distinct.Count).Select(i => string.Create(CultureInfo.InvariantCulture, $"{distinct[i]}={score[i]}"))));
        string raw = string.Join("; ", raws);
        if (score[order[0]] == score[order[^1]] || !beat[order[0], order[^1]] || (Options.WorstLostAll && score[order[^1]] != 1 - distinct.Count))
        {
            Counts.Tie();
            return new RankVerdict(null, JudgeOutcome.Tie, raw);
        }
        return new RankVerdict(order.Select(i => distinct[i]).ToArray(), JudgeOutcome.Judged, raw);
    }

    /// <summary>
    /// The ranking of <see cref="JudgeOptions.RankByScore"/>: each of the <paramref name="distinct"/> answers scored alone, ordered by
    /// score (equal scores in the order given). The best must score above the worst, else the prompt is a tie; an answer whose score
    /// is unparseable (not a number in [score_min, score_max]) or whose call failed makes the prompt so (never guessed).
    /// Raw: each answer's "i:answer".
    /// </summary>
    private async Task<RankVerdict> ScoreRankAsync(string prompt, IReadOnlyList<string> answers, List<int> distinct, CancellationToken cancellation)
    {
        var texts = await Task.WhenAll(distinct.Select(d => AskAsync("score", JudgePrompts.Format(Options.ScoreTemplate,
            new Dictionary<string, string> { ["prompt"] = prompt, ["completion"] = answers[d] }, "judge.score_prompt"),
            Options.ScoreMaxTokens, cancellation))).ConfigureAwait(false);
        string raw = string.Join("; ", distinct.Select((d, n) => $"{d}:{texts[n]}"));
        if (texts.Any(t => t == null)) return new RankVerdict(null, JudgeOutcome.Failed, raw);
        var scores = texts.Select(t => JudgePrompts.ParseScore(t, Options.ScoreMin, Options.ScoreMax)).ToArray();
        if (scores.Any(double.IsNaN))
        {
            Counts.NotParsed();
            return new RankVerdict(null, JudgeOutcome.Unparseable, raw);
        }
        var order = Enumerable.Range(0, distinct.Count).OrderByDescending(n => scores[n]).ToArray();
        if (scores[order[0]] == scores[order[^1]])
        {
            Counts.Tie();
            return new RankVerdict(null, JudgeOutcome.Tie, raw);
        }
        return new RankVerdict(order.Select(n => distinct[n]).ToArray(), JudgeOutcome.Judged, raw);
    }

    /// <summary>TRL's BasePairwiseJudge.judge: one result per pair, 0 or 1, −1 where there is no verdict (unparseable, tie or failed).</summary>
    public IReadOnlyList<int> Judge(IReadOnlyList<string> prompts, IReadOnlyList<(string, string)> completions, CancellationToken cancellation = default)
    {
        if (prompts.Count != completions.Count) throw new ArgumentException($"{prompts.Count} prompts but {completions.Count} completion pairs.");
        var tasks = prompts.Select((p, i) => JudgePairAsync(p, completions[i].Item1, completions[i].Item2, i, cancellation)).ToArray();
        return Task.WhenAll(tasks).GetAwaiter().GetResult().Select(v => v.Choice).ToArray();
    }

    /// <summary>Asks <paramref name="content"/> as the user message (cached); the raw answer, or null when every try failed.</summary>
    public async Task<string?> AskAsync(string kind, string content, int maxTokens, CancellationToken cancellation = default)
    {
        string key = JudgeCache.Key([Options.Name, Options.ModelId ?? "", kind, content]);
        if (_cache.TryGet(key, out var cached))
        {
            Counts.CacheHit();
            return cached;
        }
        var options = new ChatOptions { ModelId = Options.ModelId, MaxOutputTokens = maxTokens, Temperature = Options.Temperature };
        for (int attempt = 0; ; attempt++)
        {
            cancellation.ThrowIfCancellationRequested();
            Exception? error;
            await _slots.WaitAsync(cancellation).ConfigureAwait(false);
            try
            {
                Counts.Call();
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
                timeout.CancelAfter(Options.Timeout);
                var response = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, content)], options, timeout.Token)
                    .WaitAsync(Options.Timeout, cancellation).ConfigureAwait(false);
                string text = response.Text ?? "";
                _cache.Add(key, Options.Name, text);
                return text;
            }
            catch (Exception e) when (!cancellation.IsCancellationRequested && IsTransient(e))
            {
                error = e;
            }
            catch (Exception e) when (!cancellation.IsCancellationRequested && IsQuestionError(e))
            {
                // This question is refused (too long for the judge's context, say); the others may pass.
                Counts.Fail();
                LastError = Describe(e);
                return null;
            }
            catch (Exception e) when (!cancellation.IsCancellationRequested && e is not PeftSharpException)
            {
                throw new PeftSharpException($"judge {Options.Name}: the call failed and is not worth retrying ({Describe(e)}).", e);
            }
            finally
            {
                _slots.Release();
            }
            if (attempt >= Options.MaxRetries)
            {
                Counts.Fail();
                LastError = Describe(error);
                return null;
            }
            Counts.Retry();
            double jitter = 1 + 0.25 * Random.Shared.NextDouble();
            await Task.Delay(Options.Backoff * Math.Pow(2, attempt) * jitter, cancellation).ConfigureAwait(false);
        }
    }

    /// <summary>The last failure that exhausted its retries (for the summary), else null.</summary>
    public string? LastError { get; private set; }

    /// <summary>
    /// Worth another try: a timeout, a connection error, HTTP 408, 409, 429 or 5xx (from HttpClient, the OpenAI SDK or any client
    /// that sets a status), never a 4xx that will fail again (a bad key, a bad request).
    /// </summary>
    public static bool IsTransient(Exception e) => e switch
    {
        TimeoutException or OperationCanceledException => true,
        ClientResultException { Status: var s } => s == 0 || IsTransientStatus(s),
        HttpRequestException { StatusCode: null } => true,
        HttpRequestException { StatusCode: var code } => IsTransientStatus((int)code!.Value),
        IOException => true,
        _ => e.InnerException != null && IsTransient(e.InnerException),
    };

    private static bool IsTransientStatus(int status) => status is 408 or 409 or 429 or >= 500;

    /// <summary>
    /// The endpoint refused this question (HTTP 400, 413, 422: too long for its context, say): it is counted as failed and skipped,
    /// not retried; other 4xx (a bad key, an unknown model) fail every question, so they stop the run.
    /// </summary>
    public static bool IsQuestionError(Exception e) => e switch
    {
        ClientResultException { Status: 400 or 413 or 422 } => true,
        HttpRequestException { StatusCode: HttpStatusCode.BadRequest or HttpStatusCode.RequestEntityTooLarge or HttpStatusCode.UnprocessableEntity } => true,
        _ => false,
    };

    private static string Describe(Exception? e) => e switch
    {
        null => "no error",
        ClientResultException c => $"HTTP {c.Status}: {c.Message}",
        HttpRequestException { StatusCode: HttpStatusCode code } h => $"HTTP {(int)code}: {h.Message}",
        TimeoutException or OperationCanceledException => "timed out",
        _ => $"{e.GetType().Name}: {e.Message}",
    };

    private const int FailedCode = -2;

    /// <summary>The pair shown as (first, second): 0/1 for the first/second, -1 unparseable, <see cref="FailedCode"/> failed.</summary>
    private async Task<(int Choice, string Raw)> AskPairAsync(string prompt, string first, string second, CancellationToken cancellation)
    {
        string content = JudgePrompts.Format(Options.PairwiseTemplate, new Dictionary<string, string>
        {
            ["prompt"] = prompt, ["response0"] = first, ["response1"] = second,
        }, "judge.system_prompt");
        var text = await AskAsync("pairwise", content, Options.PairwiseMaxTokens, cancellation).ConfigureAwait(false);
        if (text == null) return (FailedCode, "");
        int choice = JudgePrompts.ParsePairwise(text);
        if (choice < 0) Counts.NotParsed();
        return (choice, text);
    }

    /// <summary>Whether question <paramref name="index"/> is shown swapped: a coin keyed by (seed, index), the same on a rerun.</summary>
    private bool Flip(long index) => (Tensors.Rng.FoldIn(Options.Seed, unchecked((ulong)index)) & 1) == 1;
}
