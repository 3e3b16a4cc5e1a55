using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Recipes;
using PeftSharp.Tensors;
using PeftSharp.Training.Rl;

namespace PeftSharp.AI.Judging;

/// <summary>The config of `peftsharp judge`: the policy that answers, the prompts, how answers are sampled, the judge, and the output.</summary>
public sealed class PreferencePairsConfig
{
    public static IReadOnlyList<SectionSpec> Sections { get; } =
    [
        new("policy", "the model whose answers are judged", [
            new("model", ValueKind.String, "the policy's model folder (or ORG/NAME in the hub cache)", Nullable: false),
            new("adapter", ValueKind.String, "a LoRA adapter folder applied to it"),
            new("dtype", ValueKind.Enum, "weights in memory: auto (as stored), float32, bfloat16 or float16", Allowed: RunConfig.Dtypes),
        ]),
        new("data", "the prompts", [
            new("prompts", ValueKind.String, "a data file (.jsonl, .json, .csv, .parquet, .arrow) whose records hold a \"prompt\" (a string, or messages rendered with the chat template)"),
            new("dataset_name", ValueKind.String, "instead of prompts: a dataset folder (Parquet/Arrow/JSONL shards, save_to_disk, a dataset card) or ORG/NAME in the hub cache"),
            new("dataset_config", ValueKind.String, "the dataset card's config (default: its default one)"),
            new("split", ValueKind.String, "the split of dataset_name read (default train)"),
            new("max_prompts", ValueKind.Int, "judge only the first N prompts", Min: 1),
            new("skip_malformed", ValueKind.Bool, "skip malformed records (counted) instead of stopping"),
        ]),
        new("generation", "how the policy's answers are sampled", [
            new("num_answers", ValueKind.Int, "answers sampled per prompt, K (default 4); the judge ranks them: the best is chosen, the worst rejected", Min: 2),
            new("temperature", ValueKind.Number, "sampling temperature (default 1.0)", Min: 0, MinExclusive: true),
            new("top_p", ValueKind.Number, "nucleus sampling (default 1.0: off)", Min: 0, MinExclusive: true, Max: 1),
            new("top_k", ValueKind.Int, "keep the k most likely tokens (default 0: off)", Min: 0),
            new("max_new_tokens", ValueKind.Int, "most tokens per answer (default 64)", Min: 1),
            new("stop", ValueKind.StringList, "an answer is cut before the first of these strings"),
            new("batch_size", ValueKind.Int, "prompts sampled together (each K times; default 8)", Min: 1),
            new("seed", ValueKind.Int, "sampling seed (default 0)", Min: 0),
        ]),
        JudgeSettings.Spec,
        new("output", "the preference pairs", [
            new("path", ValueKind.String, "the JSONL file written: prompt, chosen, rejected, verdict (the judge's raw answer), judge", Nullable: false),
        ]),
    ];

    public required string PolicyModel { get; init; }
    public string? PolicyAdapter { get; init; }
    public string Dtype { get; init; } = "auto";
    /// <summary>The prompts' data file; empty when <see cref="DatasetName"/> names a dataset instead.</summary>
    public required string PromptsFile { get; init; }
    public string? DatasetName { get; init; }
    public string? DatasetConfig { get; init; }
    public string Split { get; init; } = "train";
    public int? MaxPrompts { get; init; }
    public bool SkipMalformed { get; init; }
    public int NumAnswers { get; init; } = 4;
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int TopK { get; init; }
    public int MaxNewTokens { get; init; } = 64;
    public IReadOnlyList<string> Stop { get; init; } = [];
    public int BatchSize { get; init; } = 8;
    public ulong Seed { get; init; }
    public required JudgeSettings Judge { get; init; }
    public required string OutputPath { get; init; }

    public static PreferencePairsConfig Load(string path)
    {
        var s = ConfigSections.Load(path, Sections, [("policy", "adapter"), ("data", "prompts"), ("output", "path"), .. JudgeSettings.PathKeys]);
        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        try
        {
            var (policy, data, gen, output) = (s["policy"], s["data"], s["generation"], s["output"]);
            string model = policy.Str("model") ?? throw new PeftSharpException("policy.model is required: the model folder whose answers are judged.");
            if (!Path.IsPathRooted(model) && Directory.Exists(Path.Combine(folder, model))) model = Path.GetFullPath(Path.Combine(folder, model));
            return new PreferencePairsConfig
            {
                PolicyModel = model,
                PolicyAdapter = policy.Str("adapter"),
                Dtype = policy.Str("dtype", "auto")!,
                PromptsFile = data.Str("prompts") is { } file
                    ? (data.ContainsKey("dataset_name") ? throw new PeftSharpException("data.prompts and data.dataset_name are both set; keep one.") : file)
                    : data.ContainsKey("dataset_name") ? "" : throw new PeftSharpException("data.prompts (a file of records with a \"prompt\") or data.dataset_name is required."),
                DatasetName = data.Str("dataset_name") is { } dataset && !Path.IsPathRooted(dataset) && Directory.Exists(Path.Combine(folder, dataset))
                    ? Path.GetFullPath(Path.Combine(folder, dataset)) : data.Str("dataset_name"),
                DatasetConfig = data.Str("dataset_config"),
                Split = data.Str("split", "train")!,
                MaxPrompts = data.IntOrNull("max_prompts"),
                SkipMalformed = data.Bool("skip_malformed", false),
                NumAnswers = gen.Int("num_answers", 4),
                Temperature = gen.Num("temperature", 1.0),
                TopP = gen.Num("top_p", 1.0),
                TopK = gen.Int("top_k", 0),
                MaxNewTokens = gen.Int("max_new_tokens", 64),
                Stop = gen["stop"] is JsonArray stop ? stop.Select(x => x!.GetValue<string>()).ToList() : [],
                BatchSize = gen.Int("batch_size", 8),
                Seed = (ulong)gen.Int("seed", 0),
                Judge = s["judge"].Count > 0 ? JudgeSettings.Read(s["judge"], folder) : throw new PeftSharpException("the judge section is required (type: local or openai, model)."),
                OutputPath = output.Str("path") ?? throw new PeftSharpException("output.path is required: the JSONL file of preference pairs."),
            };
        }
        catch (PeftSharpException e) { throw new PeftSharpException($"{path}: {e.Message}"); }
    }
}

/// <summary>What `peftsharp judge` did.</summary>
public sealed record PreferencePairsResult(int Prompts, int Answers, int Pairs, int Ties, int Unparseable, int Failed, int Malformed, JudgeCounts Counts, string OutputPath);

/// <summary>
/// RLAIF's data step (`peftsharp judge`): K answers per prompt sampled from the policy with the batched generator, ranked by an AI
/// judge (<see cref="ChatJudge.RankAsync"/>; two answers through TRL's pairwise prompt), and the best and worst written as a
/// preference pair that DPO trains on: {"prompt", "chosen", "rejected", "verdict" (the judge's raw answer), "judge"}. A prompt
/// whose answers tie, or whose verdict is unparseable or failed, gives no pair (counted, never guessed).
/// </summary>
public static class PreferencePairs
{
    /// <summary>Samples the answers of every prompt: K per prompt, in prompt order.</summary>
    public static List<string[]> Sample(ICausalLM policy, string modelFolder, IReadOnlyList<GrpoPrompt> prompts, PreferencePairsConfig c)
    {
        var tokenizer = Tokenizer.FromFolder(modelFolder);
        var modelConfig = ModelConfig.Load(modelFolder);
        int[] eos = modelConfig.EosTokenIds is { Length: > 0 } e ? e : tokenizer.EosTokenId is int t ? [t] : [];
        var answers = new List<string[]>(prompts.Count);
        for (int start = 0, batch = 0; start < prompts.Count; start += c.BatchSize, batch++)
        {
            var ids = new List<int[]>();
            int count = Math.Min(c.BatchSize, prompts.Count - start);
            for (int p = start; p < start + count; p++)
            {
                var encoded = tokenizer.Encode(prompts[p].Text, addSpecialTokens: false);
                if (encoded.Length == 0) throw new PeftSharpException($"{c.DatasetName ?? c.PromptsFile}: prompt {p + 1} encodes to no tokens.");
                for (int k = 0; k < c.NumAnswers; k++) ids.Add(encoded);
            }
            var options = new GenerationOptions
            {
                DoSample = true, Temperature = c.Temperature, TopP = c.TopP, TopK = c.TopK, MaxNewTokens = c.MaxNewTokens,
                Seed = Rng.FoldIn(c.Seed, (ulong)batch), EosTokenIds = eos, PadTokenId = tokenizer.PadTokenId ?? (eos.Length > 0 ? eos[0] : 0),
            };
            IReadOnlyList<GeneratedSequence> generated;
            using (var session = policy.StartDecoding(ids.Count, ids.Max(x => x.Length) + c.MaxNewTokens))
                generated = Generator.Generate(session, ids, options);
            for (int p = 0; p < count; p++)
                answers.Add(Enumerable.Range(0, c.NumAnswers).Select(k => Cut(tokenizer.Decode(generated[p * c.NumAnswers + k].Tokens, skipSpecialTokens: true), c.Stop)).ToArray());
        }
        return answers;
    }

    /// <summary>The text before the first stop string.</summary>
    public static string Cut(string text, IReadOnlyList<string> stops)
    {
        int cut = text.Length;
        foreach (var s in stops)
            if (s.Length > 0 && text.IndexOf(s, StringComparison.Ordinal) is int at and >= 0) cut = Math.Min(cut, at);
        return text[..cut];
    }

    /// <summary>The prompt as the judge reads it: a string as it is; messages as "role: content" lines (the last user turn alone when it is the only one).</summary>
    public static string JudgeText(JsonObject row, string rendered)
    {
        if (row["prompt"] is not JsonArray messages) return rendered;
        var turns = messages.OfType<JsonObject>().Select(m => (Role: m["role"]?.ToString() ?? "", Content: m["content"]?.ToString() ?? "")).ToList();
        return turns.Count == 1 ? turns[0].Content : string.Join("\n", turns.Select(t => $"{t.Role}: {t.Content}"));
    }

    /// <summary>Ranks each prompt's answers with <paramref name="judge"/> (all prompts at once, within its concurrency bound) and writes the pairs.</summary>
    public static PreferencePairsResult Judge(ChatJudge judge, IReadOnlyList<GrpoPrompt> prompts, IReadOnlyList<string[]> answers, string outputPath,
        int malformed = 0, CancellationToken cancellation = default)
    {
        var verdicts = Task.WhenAll(prompts.Select((p, i) => judge.RankAsync(JudgeText(p.Row, p.Text), answers[i], i, cancellation))).GetAwaiter().GetResult();
        var sb = new StringBuilder();
        int pairs = 0, ties = 0, unparseable = 0, failed = 0;
        for (int i = 0; i < prompts.Count; i++)
        {
            var v = verdicts[i];
            switch (v.Outcome)
            {
                case JudgeOutcome.Tie: ties++; continue;
                case JudgeOutcome.Unparseable: unparseable++; continue;
                case JudgeOutcome.Failed: failed++; continue;
            }
            var ranking = v.Ranking!;
            bool conversational = prompts[i].Row["prompt"] is JsonArray;
            JsonNode Completion(string text) => conversational
                ? new JsonArray(new JsonObject { ["role"] = "assistant", ["content"] = text })
                : JsonValue.Create(text);
            var record = new JsonObject
            {
                ["prompt"] = prompts[i].Row["prompt"]!.DeepClone(),
                ["chosen"] = Completion(answers[i][ranking[0]]),
                ["rejected"] = Completion(answers[i][ranking[^1]]),
                ["verdict"] = v.Raw,
                ["judge"] = judge.Options.Name,
            };
            sb.Append(record.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping })).Append('\n');
            pairs++;
        }
        if (Path.GetDirectoryName(Path.GetFullPath(outputPath)) is { } dir) Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(outputPath, sb.ToString());
        return new PreferencePairsResult(prompts.Count, answers.Sum(a => a.Length), pairs, ties, unparseable, failed, malformed, judge.Counts, outputPath);
    }

    /// <summary>The whole step: prompts read, answers sampled from <paramref name="policy"/>, judged, pairs written.</summary>
    public static PreferencePairsResult Run(PreferencePairsConfig c, Func<ICausalLM> loadPolicy, TextWriter output, CancellationToken cancellation = default)
    {
        string folder = ModelFolder.Resolve(c.PolicyModel);
        var skipped = new List<MalformedRecord>();
        var template = SftData.ResolveChatTemplate(null, folder);
        var files = c.DatasetName is { } name ? DatasetSources.Resolve(name, c.DatasetConfig).Files(c.Split, "split") : [c.PromptsFile];
        var prompts = files.SelectMany(f => GrpoTuning.LoadPrompts(f, template, c.SkipMalformed, skipped)).ToList();
        if (c.MaxPrompts is int max && prompts.Count > max) prompts = prompts.Take(max).ToList();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"sampling {c.NumAnswers} answers for each of {prompts.Count} prompts from {c.PolicyModel}{(c.PolicyAdapter != null ? " + " + c.PolicyAdapter : "")}"));
        List<string[]> answers;
        using (var policy = loadPolicy()) answers = Sample(policy, folder, prompts, c);
        output.WriteLine($"judging with {c.Judge.Describe()}");
        var (client, judge, cache) = c.Judge.Build();
        try
        {
            using (cache)
            using (client)
                return Judge(judge, prompts, answers, c.OutputPath, skipped.Count, cancellation);
        }
        finally
        {
            if (judge.LastError != null) output.WriteLine($"last judge failure: {judge.LastError}");
        }
    }
}
