using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Formats;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Reporting;
using PeftSharp.Tensors;
using PeftSharp.Training;
using PeftSharp.Training.Preference;
using PeftSharp.Training.Rl;

namespace PeftSharp.Recipes;

/// <summary>
/// A GRPO run (training.trainer: grpo) from a <see cref="RunConfig"/>: prompts from any file DataFiles reads (a "prompt" string,
/// or a message list rendered with the generation prompt), the model loaded as for SFT, <see cref="GrpoObjective"/> on the shared
/// <see cref="Trainer{TBatch}"/> loop with the config's built-in rewards (<paramref name="hostRewards"/> builds the host kinds such as
/// judge:FILE; a program may add <paramref name="rewards"/>), the
/// adapter or model saved, and report.html. Sampled completions go to completions.jsonl in output_dir.
/// </summary>
public static class GrpoTuning
{
    public const string CompletionsFileName = "completions.jsonl";

    public static FineTuningResult Run(RunConfig config, IEnumerable<ITrainerCallback>? callbacks = null, CancellationToken cancellation = default,
        IEnumerable<IRewardFunction>? rewards = null, Func<RewardSpec, IRewardFunction>? hostRewards = null)
    {
        var args = config.Training;
        var options = config.Grpo ?? throw new PeftSharpException("training.trainer: grpo needs a grpo section with reward_funcs.");
        var notices = new List<string>(config.Notices);
        string folder = ModelFolder.Resolve(config.ModelNameOrPath);
        var modelConfig = ModelConfig.Load(folder);
        var tokenizer = Tokenizer.FromFolder(config.Tokenizer ?? folder);
        var template = SftData.ResolveChatTemplate(config.Data.ChatTemplate, folder);
        if (config.Data.TestSize != null)
            throw new PeftSharpException("grpo: data.test_size is not supported; give the held-out prompts as data.eval_file.");
        var skipped = new List<MalformedRecord>();
        var prompts = LoadPrompts(config.Data.TrainFile ?? throw new PeftSharpException("grpo: data.train_file is required."), template,
            config.Data.SkipMalformed, skipped);
        var evalPrompts = string.IsNullOrEmpty(config.Data.EvalFile) ? null : LoadPrompts(config.Data.EvalFile, template, config.Data.SkipMalformed, skipped);
        if (skipped.Count > 0) notices.Add($"skipped {skipped.Count} malformed line(s); first: {skipped[0]}");
        var rewardFunctions = Rewards.Parse(options.RewardFuncs, hostRewards).Concat(rewards ?? []).ToList();

        var loadOptions = FineTuning.LoadOptionsFor(config, folder);
        using ICausalLM model = QuantizedModel.Load(folder, loadOptions);
        if (config.LoadIn4Bit) QuantizedModel.QuantizeLinears(model, BitsAndBytesConfig.FromJson(config.Quantization!));
        PeftModel? peft = null;
        if (config.Lora != null)
        {
            config.Lora.BaseModelNameOrPath ??= config.ModelNameOrPath;
            peft = PeftModel.Wrap(model, config.Lora, rng: new Rng((ulong)args.Seed));
            notices.AddRange(peft.Notices);
        }
        if (args.ApplyPrecision(model, config.Dtype) is { } precision) notices.Add(precision);
        IReferenceModel? reference = peft != null ? new DisabledAdapterReference(peft) : null;
        var (trainable, all) = peft?.CountParameters() ?? (model.Parameters.Where(p => p.RequiresGrad).Sum(p => p.Length), model.Parameters.Sum(p => p.Length));
        string trainableLine = peft?.PrintTrainableParameters() ?? Planning.MemoryPlanner.PeftLine(trainable, all);
        var output = new RunOutput(model, peft, config, folder);
        Directory.CreateDirectory(args.OutputDir);
        int[] eos = modelConfig.EosTokenIds is { Length: > 0 } e ? e : tokenizer.EosTokenId is int t ? [t] : [];
        string? log = options.LogCompletions ? Path.Combine(args.OutputDir, CompletionsFileName) : null;
        var objective = new GrpoObjective(model, tokenizer, options, prompts, rewardFunctions, reference, eos, log, args.GradientAccumulationSteps)
        {
            EvalPrompts = evalPrompts, EvalBatchSize = args.PerDeviceEvalBatchSize, EvalSeed = (ulong)(uint)args.Seed,
        };
        var trainerOptions = new TrainerOptions
        {
            Trainable = output.State, Callbacks = (callbacks ?? []).Append(new StopOnCancellation(cancellation)), Shuffle = config.Data.Shuffle, SaveFinal = output.SaveFinal,
        };
        TrainResult result;
        try { result = new Trainer<GrpoBatch>(model, args, objective, trainerOptions).Train(); }
        finally { foreach (var r in rewardFunctions.OfType<IDisposable>()) r.Dispose(); }
        if (result.ResumedFrom != null) notices.Add($"resumed from {result.ResumedFrom}; trained to step {result.GlobalStep}.");
        if (cancellation.IsCancellationRequested) notices.Add($"interrupted at step {result.GlobalStep}: a checkpoint was saved; resume with resume_from_checkpoint: true.");
        long modelBytes = Directory.EnumerateFiles(folder, "*.safetensors").Sum(f => new FileInfo(f).Length);
        var final = new List<(string, string)>
        {
            ("train loss", $"{result.TrainingLoss:F4}"), ("steps", result.GlobalStep.ToString()),
            (peft != null ? "adapter size" : "model size", $"{output.Bytes / 1024.0:F1} KiB"),
        };
        var logPath = Path.Combine(args.OutputDir, Checkpointing.MetricsFileName);
        var reportData = new ReportData
        {
            Title = $"PeftSharp grpo ({config.Method}) run: {config.ModelNameOrPath}",
            Log = File.Exists(logPath) ? HtmlReport.ReadLog(logPath) : [],
            Config = config.Effective,
            Summary = [trainableLine, .. notices],
            FinalMetrics = final,
            Samples = log != null && File.Exists(log) ? LastSamples(log, 8) : [],
        };
        var report = HtmlReport.Write(args.OutputDir, reportData);
        return new FineTuningResult(config.Method, args.OutputDir, result, null, null, trainableLine, output.Bytes, modelBytes, report, notices) { Report = reportData };
    }

    /// <summary>The last step's sampled completions from completions.jsonl (at most <paramref name="count"/>), with their rewards, for report.html.</summary>
    private static List<SampleGeneration> LastSamples(string path, int count)
    {
        var lines = File.ReadLines(path).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        if (lines.Count == 0) return [];
        int last = (int)lines[^1]["step"]!;
        return lines.Where(l => (int)l["step"]! == last).Take(count).Select(l => new SampleGeneration((string)l["prompt"]!, null,
            $"[step {last}, reward {((double)l["reward"]!).ToString("F3", System.Globalization.CultureInfo.InvariantCulture)}] {(string)l["completion"]!}", null)).ToList();
    }

    /// <summary>GRPO's prompts: each record's "prompt" (a string, or messages rendered with the generation prompt) and all its fields.</summary>
    public static List<GrpoPrompt> LoadPrompts(string path, ChatTemplate? template, bool skipMalformed, List<MalformedRecord> skipped)
    {
        var records = DataFiles.Read(path, "prompt", PlainTextMode.Lines, skipMalformed, skipped);
        var prompts = new List<GrpoPrompt>(records.Count);
        foreach (var r in records)
        {
            try { prompts.Add(new GrpoPrompt(PromptText(r, template), r.Fields)); }
            catch (PeftSharpException e) when (skipMalformed)
            {
                skipped.Add(new MalformedRecord(r.File, r.Line, e.Message));
            }
        }
        if (prompts.Count == 0) throw new PeftSharpException($"{path}: no prompts.");
        return prompts;
    }

    private static string PromptText(DataRecord r, ChatTemplate? template)
    {
        switch (r.Fields["prompt"])
        {
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                return v.GetValue<string>();
            case JsonArray messages:
            {
                var t = template ?? throw new PeftSharpException($"{r.Where}: conversational prompts need a chat template (the tokenizer's, or data.chat_template).");
                var list = new List<ChatMessage>();
                foreach (var m in messages)
                {
                    if (m is not JsonObject o || o["role"] is not JsonValue role || role.GetValueKind() != JsonValueKind.String)
                        throw new PeftSharpException($"{r.Where}: each prompt message must be {{\"role\": ..., \"content\": ...}}.");
                    list.Add(new ChatMessage(role.GetValue<string>(), o["content"] is JsonValue c && c.GetValueKind() == JsonValueKind.String ? c.GetValue<string>() : null));
                }
                try { return t.Render(list, true); }
                catch (ChatTemplateException e) { throw new PeftSharpException($"{r.Where}: chat template failed: {e.Message}", e); }
            }
            default:
                throw new PeftSharpException($"{r.Where}: GRPO data needs a \"prompt\" (a string or a list of messages); found {string.Join(", ", r.Fields.Select(f => $"\"{f.Key}\""))}.");
        }
    }
}
