using System.Globalization;
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
using PeftSharp.Training.Metrics;
using PeftSharp.Training.Sft;

namespace PeftSharp.Recipes;

/// <summary>What a fine-tuning run produced.</summary>
public sealed record FineTuningResult(
    string Method, string OutputDir, TrainResult Train, LossMetrics? Eval, GenerationResult? Generation,
    string TrainableLine, long OutputBytes, long ModelBytes, string ReportPath, IReadOnlyList<string> Notices)
{
    /// <summary>The final evaluation's metrics of a preference trainer (eval_ prefixed), or null.</summary>
    public IReadOnlyDictionary<string, double>? EvalMetrics { get; init; }

    /// <summary>What report.html shows, for callers that add to it (e.g. generations before training).</summary>
    public required ReportData Report { get; init; }
}

/// <summary>
/// One fine-tuning run from a <see cref="RunConfig"/>, as `peftsharp train` runs it: load the base
/// (frozen for LoRA, 4-bit for QLoRA, trainable for full fine-tuning), wrap it with PEFT, read and
/// tokenize the data, train with <see cref="SftTrainer"/>, save the adapter (PEFT's format) or the
/// model, score the eval set, and write report.html.
/// </summary>
public static class FineTuning
{
    /// <summary>
    /// How <see cref="Run"/> loads the base: frozen (LoRA, QLoRA) or trainable (full), bias "all"'s extra trainable
    /// biases, gradient checkpointing, and model.dtype as transformers' torch_dtype: "auto" keeps the stored dtype
    /// (16-bit weights stay views of the file), "float32" converts on load, "bfloat16"/"float16" keep the frozen
    /// matrices in that type (rounding f32 ones on load: half their memory).
    /// </summary>
    public static LoadOptions LoadOptionsFor(RunConfig config, string folder)
    {
        var args = config.Training;
        bool float32 = config.Dtype == "float32";
        DType? weights16 = config.Dtype switch { "bfloat16" => DType.BF16, "float16" => DType.F16, _ => null };
        return config.Method switch
        {
            "full" => new LoadOptions { FullFineTune = true, GradientCheckpointing = args.GradientCheckpointing },
            // bias "all": PEFT trains every bias. Those of linear layers are the LoRA wrapper's to make trainable;
            // the rest (GPT-2's LayerNorm biases) are loaded trainable.
            _ when config.Lora!.Bias == "all" => new LoadOptions
            {
                Trainable = NonLinearBias(folder), GradientCheckpointing = args.GradientCheckpointing, Float32 = float32, Weights16 = weights16,
            },
            _ => new LoadOptions { GradientCheckpointing = args.GradientCheckpointing, Float32 = float32, Weights16 = weights16 },
        };
    }

    /// <summary>
    /// The dtype a fully fine-tuned model is saved in (training itself is f32): model.dtype when it names one, else
    /// (auto) the dtype the checkpoint stores its matrices in, as transformers saves a model loaded with dtype="auto".
    /// </summary>
    public static DType SaveDType(RunConfig config, string folder)
    {
        switch (config.Dtype)
        {
            case "float32": return DType.F32;
            case "bfloat16": return DType.BF16;
            case "float16": return DType.F16;
        }
        using var checkpoint = Formats.Safetensors.SafetensorsCheckpoint.Open(folder);
        return checkpoint.Tensors.FirstOrDefault(t => t.Rank == 2 && t.DType is DType.F32 or DType.BF16 or DType.F16)?.DType ?? DType.F32;
    }

    /// <summary>Bias parameters outside the linear modules (e.g. LayerNorm biases), for bias "all".</summary>
    private static Func<string, bool> NonLinearBias(string folder)
    {
        var linear = Models.ModelSkeleton.FromConfig(Formats.HfConfig.ModelConfig.Load(folder)).Linears.Select(l => l.Name + ".bias").ToHashSet(StringComparer.Ordinal);
        return name => name.EndsWith(".bias", StringComparison.Ordinal) && !linear.Contains(name);
    }

    /// <summary>Where a run keeps its tokenized training examples (<see cref="TokenizationCache"/>): output_dir/tokenized.</summary>
    public static string TokenizationCacheDirectory(TrainingArguments args) => Path.Combine(args.OutputDir, "tokenized");

    /// <param name="profileSteps">Profile each optimizer step by part (<see cref="TrainerOptions.ProfileSteps"/>; the sft trainer only).</param>
    public static FineTuningResult Run(RunConfig config, IEnumerable<ITrainerCallback>? callbacks = null, CancellationToken cancellation = default,
        int generationSamples = 8, int maxNewTokens = 32, bool profileSteps = false)
    {
        if (profileSteps && config.Trainer != "sft")
            throw new PeftSharpException($"a step profile is taken of the sft trainer only; the config's trainer is '{config.Trainer}'.");
        if (config.Trainer == "grpo") return GrpoTuning.Run(config, callbacks, cancellation);
        if (config.Trainer != "sft") return PreferenceTuning.Run(config, callbacks, cancellation);
        var args = config.Training;
        var notices = new List<string>(config.Notices);
        string folder = ModelFolder.Resolve(config.ModelNameOrPath);
        int seed = args.Seed;

        // Everything that can be checked without the weights is checked first: the model's config, the tokenizer,
        // the chat template and the data (read, tokenized, against the model's vocabulary).
        var modelConfig = ModelConfig.Load(folder);
        var tokenizer = Tokenizer.FromFolder(config.Tokenizer ?? folder);
        var template = SftData.ChatTemplateFor(config.Data, folder);
        // A callback that takes tokenizing progress (the CLI's progress view) is told how far tokenizing the training data has got.
        var data = SftData.Load(config.Data, tokenizer, template, args.DataSeed ?? seed, cacheDirectory: TokenizationCacheDirectory(args),
            progress: callbacks?.OfType<IProgress<TokenizationProgress>>().FirstOrDefault());
        notices.AddRange(data.Notices);
        CheckVocabulary(data, modelConfig, config.Tokenizer ?? folder, folder);
        // Under an MPI launcher (mpirun -np N): one rank of a data-parallel run, checked to have been given the same run as rank 0.
        using var comm = Training.Distributed.DistributedRun.Start();
        Training.Distributed.DistributedRun.CheckSameRun(comm, () => Training.Distributed.DistributedRun.Fingerprint(config.Effective.ToJsonString(),
            [folder, config.Tokenizer, config.Data.TrainFile, config.Data.EvalFile]), "config, model or data files");
        if (comm.Size > 1) notices.Add($"data-parallel over {comm.Size} processes: global batch {args.PerDeviceTrainBatchSize * args.GradientAccumulationSteps * comm.Size} rows per step.");

        using var model = QuantizedModel.Load(folder, LoadOptionsFor(config, folder));
        if (config.LoadIn4Bit)
        {
            var bnb = BitsAndBytesConfig.FromJson(config.Quantization!);
            var quantized = QuantizedModel.QuantizeLinears(model, bnb);
            notices.Add(quantized.Count > 0
                ? $"quantized the frozen base to 4 bits ({bnb.Bnb4bitQuantType}{(bnb.Bnb4bitUseDoubleQuant ? ", double quantization" : "")}, compute {bnb.Bnb4bitComputeDtype})."
                : "the model folder is already a 4-bit bitsandbytes checkpoint: its quantized layers are used as stored.");
        }
        if (args.NeftuneNoiseAlpha is double alpha)
        {
            if (model is not CausalLM causal) throw new PeftSharpException("training.neftune_noise_alpha: this model does not support NEFTune.");
            causal.NeftuneNoiseAlpha = alpha;
        }

        PeftModel? peft = null;
        if (config.Lora != null)
        {
            config.Lora.BaseModelNameOrPath ??= config.ModelNameOrPath;
            peft = PeftModel.Wrap(model, config.Lora, rng: new Rng((ulong)seed));
            notices.AddRange(peft.Notices);
        }
        if (args.ApplyPrecision(model, config.Dtype) is { } precision) notices.Add(precision);
        var (trainable, all) = peft?.CountParameters() ?? (model.Parameters.Where(p => p.RequiresGrad).Sum(p => p.Length), model.Parameters.Sum(p => p.Length));
        string trainableLine = peft?.PrintTrainableParameters() ?? Planning.MemoryPlanner.PeftLine(trainable, all);

        var output = new RunOutput(model, peft, config, folder);
        Directory.CreateDirectory(args.OutputDir);
        var allCallbacks = (callbacks ?? []).Append(new StopOnCancellation(cancellation));
        var objective = new SftObjective(model, data.Train, data.Eval, args.PerDeviceEvalBatchSize)
        {
            ExtraEvaluation = GenerationEvaluation(args, model, tokenizer, template, data.EvalExamples, maxNewTokens),
        };
        var trainer = new SftTrainer(model, args, objective,
            new TrainerOptions
            {
                Trainable = output.State, Callbacks = allCallbacks, Shuffle = config.Data.Shuffle, SaveFinal = output.SaveFinal,
                Communicator = comm, ShardOptimizerState = Training.Distributed.DistributedRun.ShardOptimizerState(peft == null),
                ProfileSteps = profileSteps,
            });
        var result = trainer.Train();
        bool interrupted = cancellation.IsCancellationRequested;
        if (result.ResumedFrom != null) notices.Add($"resumed from {result.ResumedFrom}; trained to step {result.GlobalStep}.");
        notices.AddRange(result.Warnings);
        if (interrupted) notices.Add($"interrupted at step {result.GlobalStep}: a checkpoint was saved; resume with resume_from_checkpoint: true.");
        if (peft == null && output.SaveAs != DType.F32) notices.Add($"saved the fine-tuned weights as {output.SaveAs.SafetensorsName()}, the checkpoint's dtype (model.dtype: float32 keeps them f32).");
        long modelBytes = Directory.EnumerateFiles(folder, "*.safetensors").Sum(f => new FileInfo(f).Length);

        LossMetrics? eval = data.Eval != null && !interrupted ? trainer.Evaluate() : null;
        GenerationResult? generation = null;
        var samples = new List<SampleGeneration>();
        var genExamples = interrupted || comm.Rank != 0 ? [] : data.EvalExamples.Where(e => e.Format != DatasetFormat.Text).Take(Math.Max(generationSamples, 0)).ToList();
        if (genExamples.Count > 0)
        {
            generation = GenerationMetrics.Evaluate(model, tokenizer, template, genExamples, maxNewTokens);
            for (int i = 0; i < genExamples.Count; i++)
                samples.Add(new SampleGeneration(PromptText(genExamples[i]), null, generation.Predictions[i], generation.References[i]));
        }

        var final = new List<(string, string)> { ("train loss", $"{result.TrainingLoss:F4}"), ("steps", result.GlobalStep.ToString()) };
        if (eval != null) final.AddRange([("eval loss", $"{eval.Loss:F4}"), ("perplexity", $"{eval.Perplexity:F3}"), ("mean token accuracy", $"{eval.MeanTokenAccuracy:F4}")]);
        if (generation != null) final.AddRange([("BLEU", $"{generation.Bleu.Score:F2}"), ("ROUGE-L F1", $"{generation.RougeL:F4}")]);
        if (result.Profile is { } profile)
            foreach (var (part, seconds, share, phases) in profile.PerSpan())
                final.Add(($"step time: {part}", string.Create(CultureInfo.InvariantCulture,
                    $"{seconds:F3} s/step ({100 * share:F1}%; first forward / recomputation / backward {phases[0]:F3} / {phases[1]:F3} / {phases[2]:F3} s)")));
        final.Add((peft != null ? "adapter size" : "model size", $"{output.Bytes / 1024.0:F1} KiB ({100.0 * output.Bytes / Math.Max(1, modelBytes):F2}% of the base model's {modelBytes / 1048576.0:F1} MiB)"));

        var logPath = Path.Combine(args.OutputDir, "metrics.jsonl");
        var reportData = new ReportData
        {
            Title = $"PeftSharp {config.Method} run: {config.ModelNameOrPath}",
            Log = File.Exists(logPath) ? HtmlReport.ReadLog(logPath) : [],
            Config = config.Effective,
            Summary = [trainableLine, .. notices],
            FinalMetrics = final,
            Samples = samples,
        };
        var report = comm.Rank == 0 ? HtmlReport.Write(args.OutputDir, reportData) : "";
        return new FineTuningResult(config.Method, args.OutputDir, result, eval, generation, trainableLine, output.Bytes, modelBytes, report, notices)
        {
            Report = reportData,
        };
    }

    /// <summary>
    /// BLEU and ROUGE-L of greedy generations on the evaluation examples, computed at each evaluation when
    /// metric_for_best_model asks for one of them (they cost a generation per example; otherwise only at the end).
    /// </summary>
    private static (IReadOnlyCollection<string>, Func<IReadOnlyDictionary<string, double>>)? GenerationEvaluation(TrainingArguments args, ICausalLM model,
        Tokenizer tokenizer, ChatTemplate? template, IReadOnlyList<SftExample> evalExamples, int maxNewTokens)
    {
        string metric = TrainingArguments.BestMetricKey(args.MetricForBestModel)["eval_".Length..];
        if (!GenerationMetricNames.Contains(metric)) return null;
        var examples = evalExamples.Where(e => e.Format != DatasetFormat.Text).ToList();
        if (examples.Count == 0)
            throw new PeftSharpException($"training.metric_for_best_model: {metric} scores generations against references, and the evaluation data has none " +
                "(prompt-completion or conversational examples).");
        return (GenerationMetricNames, () =>
        {
            var g = GenerationMetrics.Evaluate(model, tokenizer, template, examples, maxNewTokens);
            return new Dictionary<string, double> { ["bleu"] = g.Bleu.Score, ["rouge_l"] = g.RougeL };
        });
    }

    /// <summary>Generation metrics metric_for_best_model may name (without "eval_").</summary>
    public static readonly string[] GenerationMetricNames = ["bleu", "rouge_l"];

    /// <summary>Every token id the data feeds the model must be in its embedding: checked before the weights load.</summary>
    private static void CheckVocabulary(SftDataBundle data, ModelConfig modelConfig, string tokenizerFolder, string modelFolder)
    {
        int max = -1;
        foreach (var set in new[] { data.Train, data.Eval })
            if (set != null) max = Math.Max(max, set.MaxTokenId());
        if (max >= modelConfig.VocabSize)
            throw new PeftSharpException($"the tokenizer in {tokenizerFolder} produces token id {max}, but the model in {modelFolder} has vocab_size " +
                $"{modelConfig.VocabSize} (config.json): the tokenizer does not belong to this model. Use the model's own tokenizer (model.tokenizer), " +
                "or a model whose embedding covers the tokenizer's vocabulary.");
    }

    public static string PromptText(SftExample e) =>
        e.Prompt ?? (e.Messages != null ? string.Join("\n", e.Messages.Where(m => m.Role != "assistant").Select(m => $"{m.Role}: {m.Content}")) : e.Text ?? "");
}

/// <summary>Ctrl+C: stop after the current step and save a checkpoint there.</summary>
internal sealed class StopOnCancellation(CancellationToken token) : ITrainerCallback
{
    public void OnStep(TrainingProgress progress, TrainerControl control)
    {
        if (!token.IsCancellationRequested) return;
        control.ShouldStop = true;
        control.ShouldSave = true;
    }
}

/// <summary>
/// A LoRA run's checkpoint: the adapter in PEFT's format (adapter_config.json +
/// adapter_model.safetensors, loadable by Python's peft) plus the trainable parameters under their
/// internal names for exact resume.
/// </summary>
public sealed class PeftCheckpointState(PeftModel peft) : ITrainableState
{
    private readonly ParameterTrainableState _parameters = new(peft.TrainableParameters);

    public void Save(string directory)
    {
        peft.SaveAdapter(directory, peft.ActiveAdapter);
        _parameters.Save(directory);
    }

    public void Load(string directory) => _parameters.Load(directory);
}
