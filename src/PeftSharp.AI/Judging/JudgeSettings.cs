using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using PeftSharp.Config;

namespace PeftSharp.AI.Judging;

/// <summary>
/// The judge section of a config file (`peftsharp judge`, the judge reward): which chat client judges, and how it is asked.
/// type local runs a PeftSharp model folder (+ adapter) in process; type openai talks to an OpenAI-compatible endpoint.
/// </summary>
public sealed class JudgeSettings
{
    public static readonly string[] Types = ["local", "openai"];

    public static SectionSpec Spec { get; } = new("judge", "the AI judge: a local model in process or an OpenAI-compatible endpoint", [
        new("type", ValueKind.Enum, "local (a model folder run in process) or openai (an OpenAI-compatible endpoint)", Allowed: Types, Nullable: false),
        new("model", ValueKind.String, "local: the model folder; openai: the endpoint's model name", Nullable: false),
        new("adapter", ValueKind.String, "local: a LoRA adapter folder applied to the judge model"),
        new("base_url", ValueKind.String, $"openai: the API root (default {JudgeEndpoints.DefaultBaseUrl})"),
        new("api_key_env", ValueKind.String, $"openai: the environment variable holding the API key (default {JudgeEndpoints.DefaultApiKeyVariable}; a loopback URL may go without)"),
        new("system_prompt", ValueKind.String, "the pairwise template, fields {prompt} {response0} {response1} (default TRL's DEFAULT_PAIRWISE_SYSTEM_PROMPT)"),
        new("rank_prompt", ValueKind.String, "the rank template for more than two answers, fields {prompt} {outputs}"),
        new("ranking", ValueKind.Enum, "how more than two answers are ranked: prompt (one rank_prompt call, default), round_robin (every pair through the pairwise prompt, ranked by wins - losses; a judge that only knows pairs can rank) or score (each answer alone through score_prompt, ranked by its score; two answers too)", Allowed: JudgeOptions.Rankings),
        new("score_prompt", ValueKind.String, "ranking score: the question about one answer, fields {prompt} {completion}, answered by a number (default: a 0-10 score)"),
        new("score_min", ValueKind.Number, "ranking score: the lowest valid score (default 0)"),
        new("score_max", ValueKind.Number, "ranking score: the highest valid score (default 10)"),
        new("worst_lost_all", ValueKind.Bool, "round_robin: a pair only when the worst answer lost every game (a clear loser), else a tie (default false)"),
        new("max_tokens", ValueKind.Int, "most tokens of a pairwise answer (default 1, as TRL), or of a score answer with ranking score (default 8)", Min: 1),
        new("temperature", ValueKind.Number, "the judge's sampling temperature (default 0)", Min: 0),
        new("shuffle_order", ValueKind.Bool, "show each pair in a seeded random order, against position bias (default true, as TRL)"),
        new("both_orders", ValueKind.Bool, "ask each pair in both orders; a verdict that flips with the order is a tie, skipped (default false)"),
        new("seed", ValueKind.Int, "seed of the shuffles (default 0)", Min: 0),
        new("max_concurrency", ValueKind.Int, "judge calls in flight at once (default 4)", Min: 1),
        new("max_retries", ValueKind.Int, "retries of a call after a transient error: HTTP 408/429/5xx, connection error, timeout (default 3)", Min: 0),
        new("timeout", ValueKind.Number, "seconds before one try is abandoned (default 60)", Min: 0, MinExclusive: true),
        new("backoff", ValueKind.Number, "seconds before the first retry, doubled each retry (default 1)", Min: 0),
        new("cache", ValueKind.String, "a JSONL file of answers, keyed by judge, template and question: a rerun pays only for new questions"),
    ]);

    /// <summary>(section, key) paths resolved beside the config file.</summary>
    public static readonly (string, string)[] PathKeys = [("judge", "adapter"), ("judge", "cache")];

    public required string Type { get; init; }
    public required string Model { get; init; }
    public string? Adapter { get; init; }
    public string BaseUrl { get; init; } = JudgeEndpoints.DefaultBaseUrl;
    public string ApiKeyEnv { get; init; } = JudgeEndpoints.DefaultApiKeyVariable;
    public string? CachePath { get; init; }
    public required JudgeOptions Options { get; init; }

    /// <summary>The judge section; <paramref name="o"/> was checked against <see cref="Spec"/>. A local model's folder is resolved beside the file when it exists there.</summary>
    public static JudgeSettings Read(JsonObject o, string? configFolder = null)
    {
        string type = o.Str("type") ?? throw new PeftSharpException("judge.type is required: local or openai.");
        string model = o.Str("model") ?? throw new PeftSharpException(type == "local" ? "judge.model is required: the judge's model folder." : "judge.model is required: the endpoint's model name.");
        if (type == "local" && configFolder != null && !Path.IsPathRooted(model) && Directory.Exists(Path.Combine(configFolder, model)))
            model = Path.GetFullPath(Path.Combine(configFolder, model));
        foreach (var key in type == "local" ? new[] { "base_url", "api_key_env" } : ["adapter"])
            if (o.ContainsKey(key)) throw new PeftSharpException($"judge.{key} is for type {(type == "local" ? "openai" : "local")}, but judge.type is {type}.");
        string baseUrl = o.Str("base_url", JudgeEndpoints.DefaultBaseUrl)!;
        var d = new JudgeOptions();
        var options = new JudgeOptions
        {
            Name = type == "local" ? $"local:{Path.GetFileName(Path.TrimEndingDirectorySeparator(model))}{(o.Str("adapter") is { } a ? "+" + Path.GetFileName(Path.TrimEndingDirectorySeparator(a)) : "")}" : $"openai:{model}@{baseUrl}",
            ModelId = type == "openai" ? model : null,
            PairwiseTemplate = o.Str("system_prompt", d.PairwiseTemplate)!,
            RankTemplate = o.Str("rank_prompt", d.RankTemplate)!,
            PairwiseMaxTokens = o.Int("max_tokens", d.PairwiseMaxTokens),
            Temperature = (float)o.Num("temperature", d.Temperature),
            ShuffleOrder = o.Bool("shuffle_order", d.ShuffleOrder),
            BothOrders = o.Bool("both_orders", d.BothOrders),
            Ranking = o.Str("ranking", d.Ranking)!,
            ScoreTemplate = o.Str("score_prompt", d.ScoreTemplate)!,
            ScoreMin = o.Num("score_min", d.ScoreMin),
            ScoreMax = o.Num("score_max", d.ScoreMax),
            ScoreMaxTokens = o.Int("max_tokens", d.ScoreMaxTokens),
            WorstLostAll = o.Bool("worst_lost_all", d.WorstLostAll),
            Seed = (ulong)o.Int("seed", 0),
            MaxConcurrency = o.Int("max_concurrency", d.MaxConcurrency),
            MaxRetries = o.Int("max_retries", d.MaxRetries),
            Timeout = TimeSpan.FromSeconds(o.Num("timeout", d.Timeout.TotalSeconds)),
            Backoff = TimeSpan.FromSeconds(o.Num("backoff", d.Backoff.TotalSeconds)),
        };
        options.Validate();
        string ranking = options.Ranking;
        foreach (var key in new[] { "score_prompt", "score_min", "score_max" })
            if (o.ContainsKey(key) && ranking != JudgeOptions.RankByScore)
                throw new PeftSharpException($"judge.{key} is for judge.ranking: {JudgeOptions.RankByScore}, but judge.ranking is {ranking}.");
        return new JudgeSettings
        {
            Type = type, Model = model, Adapter = o.Str("adapter"), BaseUrl = baseUrl, ApiKeyEnv = o.Str("api_key_env", JudgeEndpoints.DefaultApiKeyVariable)!,
            CachePath = o.Str("cache"), Options = options,
        };
    }

    /// <summary>The chat client (the caller disposes it) and the judge over it with its cache (dispose the cache after the run).</summary>
    public (IChatClient Client, ChatJudge Judge, JudgeCache Cache) Build()
    {
        IChatClient client;
        var options = Options;
        if (Type == "local")
        {
            if (!Directory.Exists(Model)) throw new PeftSharpException($"judge.model: the model folder {Model} does not exist.");
            (client, var modelId) = JudgeEndpoints.Local(Model, Adapter);
            options = options with { ModelId = modelId };
        }
        else client = JudgeEndpoints.OpenAi(BaseUrl, Model, ApiKeyEnv, Options.Timeout + TimeSpan.FromSeconds(5));
        var cache = new JudgeCache(CachePath);
        return (client, new ChatJudge(client, options, cache), cache);
    }

    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"{Options.Name} (concurrency {Options.MaxConcurrency}, retries {Options.MaxRetries}, timeout {Options.Timeout.TotalSeconds:0.###} s{(CachePath != null ? ", cache " + CachePath : "")})");
}
