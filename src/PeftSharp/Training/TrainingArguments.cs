using System.Text.Json.Nodes;
using PeftSharp.Config;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Training;

/// <summary>"no" | "steps" | "epoch", as transformers' IntervalStrategy.</summary>
public enum IntervalStrategy { No, Steps, Epoch }

/// <summary>"no" | "steps" | "epoch" | "best", as transformers' SaveStrategy ("best": whenever an evaluation improves the best metric).</summary>
public enum SaveStrategy { No, Steps, Epoch, Best }

/// <summary>
/// transformers' TrainingArguments / TRL's SFTConfig: the same names and defaults (SFTConfig's where
/// they differ: learning_rate 2e-5, logging_steps 10). Read from the `training` section of a config file.
/// </summary>
public sealed class TrainingArguments
{
    public static readonly string[] Schedulers = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
        "cosine_with_min_lr", "warmup_stable_decay"];
    public static readonly string[] Optimizers = ["adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
        "sgd", "adafactor"];
    public static readonly string[] Strategies = ["no", "steps", "epoch"];
    public static readonly string[] SaveStrategies = ["no", "steps", "epoch", "best"];
    /// <summary>report_to values that run here: none, jsonl (metrics.jsonl, always written), tensorboard (event files), all (both).</summary>
    public static readonly string[] Reporters = ["none", "jsonl", "tensorboard", "all"];

    public string OutputDir { get; set; } = "output";
    public double LearningRate { get; set; } = 2e-5;
    public double NumTrainEpochs { get; set; } = 3;
    public int MaxSteps { get; set; } = -1;
    public int PerDeviceTrainBatchSize { get; set; } = 8;
    public int PerDeviceEvalBatchSize { get; set; } = 8;
    public int GradientAccumulationSteps { get; set; } = 1;
    public double WeightDecay { get; set; }
    public double AdamBeta1 { get; set; } = 0.9;
    public double AdamBeta2 { get; set; } = 0.999;
    public double AdamEpsilon { get; set; } = 1e-8;
    public double MaxGradNorm { get; set; } = 1.0;
    public string LrSchedulerType { get; set; } = "linear";
    public JsonObject LrSchedulerKwargs { get; set; } = [];
    /// <summary>warmup_steps: a whole number of steps, or a fraction of the total below 1.</summary>
    public double WarmupSteps { get; set; }
    public double WarmupRatio { get; set; }
    public string Optim { get; set; } = "adamw_torch";
    public IntervalStrategy LoggingStrategy { get; set; } = IntervalStrategy.Steps;
    /// <summary>logging_steps: a whole number of steps, or below 1 a fraction of the total (rounded up), as for eval_steps and save_steps.</summary>
    public double LoggingSteps { get; set; } = 10;
    public bool LoggingFirstStep { get; set; }
    public IntervalStrategy EvalStrategy { get; set; } = IntervalStrategy.No;
    public double? EvalSteps { get; set; }
    public bool EvalOnStart { get; set; }
    public SaveStrategy SaveStrategy { get; set; } = SaveStrategy.Steps;
    public double SaveSteps { get; set; } = 500;
    /// <summary>Where TensorBoard event files go (default: output_dir/runs).</summary>
    public string? LoggingDir { get; set; }
    public IReadOnlyList<string> ReportTo { get; set; } = ["jsonl"];
    public string? RunName { get; set; }
    /// <summary>bf16 / fp16 mixed precision as asked for (see <see cref="ApplyPrecision"/>).</summary>
    public bool Bf16 { get; set; }
    public bool Fp16 { get; set; }
    /// <summary>NEFTune: uniform noise of magnitude alpha/√(L·d) added to the input embeddings in training (null: off).</summary>
    public double? NeftuneNoiseAlpha { get; set; }
    public int? SaveTotalLimit { get; set; }
    public bool LoadBestModelAtEnd { get; set; }
    public string? MetricForBestModel { get; set; }
    public bool? GreaterIsBetter { get; set; }
    public int? EarlyStoppingPatience { get; set; }
    public double EarlyStoppingThreshold { get; set; }
    public int Seed { get; set; } = 42;
    public int? DataSeed { get; set; }
    public bool GradientCheckpointing { get; set; }
    /// <summary>A checkpoint folder, or "true" for the latest checkpoint in output_dir.</summary>
    public string? ResumeFromCheckpoint { get; set; }

    /// <summary>Steps between logs for a run of <paramref name="totalSteps"/> steps (a fraction below 1 is a share of the total, rounded up).</summary>
    public int LoggingStepsFor(int totalSteps) => StepsFor(LoggingSteps, totalSteps);
    public int? EvalStepsFor(int totalSteps) => EvalSteps is double e ? StepsFor(e, totalSteps) : null;
    public int SaveStepsFor(int totalSteps) => StepsFor(SaveSteps, totalSteps);

    private static int StepsFor(double steps, int totalSteps) => steps < 1 ? Math.Max(1, (int)Math.Ceiling(steps * totalSteps)) : (int)steps;

    /// <summary>The metric key that picks the best checkpoint (metric_for_best_model with "eval_" added; default eval_loss).</summary>
    public static string BestMetricKey(string? metricForBestModel) => metricForBestModel is null or "loss" or "eval_loss" ? "eval_loss"
        : metricForBestModel.StartsWith("eval_", StringComparison.Ordinal) ? metricForBestModel : "eval_" + metricForBestModel;

    /// <summary>
    /// Applies bf16 / fp16 to a loaded model (after quantizing and wrapping it) and says what they mean for this run, as a
    /// notice (null when neither is set). <c>bf16: true</c> is torch's autocast to bfloat16 for the frozen base linears
    /// (<see cref="BaseCompute.UseBf16"/>): their products round activations and weights to bf16 and accumulate in f32, on
    /// the CPU's AVX512-BF16 dot products where it has them, else on the f32 kernel over the same rounded operands (the
    /// same rounding everywhere; the sums in another order). <c>fp16: true</c> changes nothing (no f16 dot product on these
    /// CPUs; float32 compute).
    /// </summary>
    public string? ApplyPrecision(ICausalLM model, string modelDtype)
    {
        if (Fp16)
            return "fp16: true asks for float16 mixed precision; on CPU PeftSharp computes in float32 " +
                   $"(no f16 autocast) and keeps frozen weights in model.dtype ({modelDtype}; bfloat16 halves their memory).";
        if (!Bf16) return null;
        var found = BaseCompute.UseBf16(model.Linears);
        var text = new System.Text.StringBuilder("bf16: true (autocast to bfloat16): ");
        if (found.Rounded == 0) text.Append("no frozen dense or 16-bit base linear to compute in bf16, so every product stays float32");
        else
        {
            var kinds = new[] { (found.Bf16Weights, "bf16"), (found.F16Weights, "f16"), (found.F32Weights, "f32") }.Where(k => k.Item1 > 0).Select(k => $"{k.Item1} with {k.Item2} weights");
            text.Append($"{found.Rounded} frozen base linears ({string.Join(", ", kinds)}; storage stays model.dtype {modelDtype}) multiply bf16-rounded ")
                .Append("activations and weights, forward and input gradient, accumulating in float32 with float32 outputs, ")
                .Append(Kernels.Bf16Dot.Enabled ? "on this CPU's AVX512-BF16 dot products"
                    : Kernels.Bf16Dot.HardwareSupported ? "on the float32 kernel (the AVX512-BF16 kernel is off: PEFTSHARP_BF16_DOT=0 or AVX-512 disabled; the same rounded operands, no speed-up)"
                    : "on the float32 kernel (this CPU has no AVX512-BF16: the same rounded operands, no speed-up)")
                .Append("; LoRA adapters, trainable weights, norms, attention, activations, the loss and KV-cache generation stay float32");
        }
        if (found.Quantized > 0)
        {
            var types = model.Linears.Select(s => s.Base).OfType<Quantization.Linear4Bit>().Select(l => l.ComputeType).Distinct().ToList();
            text.Append($"; {found.Quantized} 4-bit layers compute in bnb_4bit_compute_dtype ({string.Join(", ", types.Select(t => t switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" }))})");
            if (!types.Contains(DType.BF16)) text.Append(", which bf16 does not override: set it to bfloat16 for bf16 products there");
        }
        if (found.Trainable > 0 && found.Rounded == 0) text.Append($" ({found.Trainable} trainable base linears multiply in float32)");
        return text.Append('.').ToString();
    }

    /// <summary>The number of warmup steps for a run of <paramref name="totalSteps"/> optimizer steps.</summary>
    public int WarmupStepsFor(int totalSteps) =>
        WarmupSteps >= 1 ? (int)WarmupSteps :
        WarmupSteps > 0 ? (int)Math.Ceiling(WarmupSteps * totalSteps) :
        (int)Math.Ceiling(WarmupRatio * totalSteps);

    public static IEnumerable<KeySpec> Keys =>
    [
        new("output_dir", ValueKind.String, "where checkpoints, the adapter, logs and the report go", Nullable: false),
        new("learning_rate", ValueKind.Number, "peak learning rate (LoRA: 1e-4 to 3e-4 is typical)", Min: 0, MinExclusive: true),
        new("num_train_epochs", ValueKind.Number, "passes over the training data", Min: 0, MinExclusive: true),
        new("max_steps", ValueKind.Int, "optimizer steps; overrides num_train_epochs when > 0", Min: -1),
        new("per_device_train_batch_size", ValueKind.Int, "examples per micro-batch", Min: 1),
        new("per_device_eval_batch_size", ValueKind.Int, "examples per evaluation batch", Min: 1),
        new("gradient_accumulation_steps", ValueKind.Int, "micro-batches per optimizer step", Min: 1),
        new("weight_decay", ValueKind.Number, "decoupled AdamW weight decay (not on biases and norms)", Min: 0),
        new("adam_beta1", ValueKind.Number, "AdamW beta1", Min: 0, Max: 1, MaxExclusive: true),
        new("adam_beta2", ValueKind.Number, "AdamW beta2", Min: 0, Max: 1, MaxExclusive: true),
        new("adam_epsilon", ValueKind.Number, "AdamW epsilon", Min: 0, MinExclusive: true),
        new("max_grad_norm", ValueKind.Number, "global gradient-norm clipping (0 disables)", Min: 0),
        new("lr_scheduler_type", ValueKind.Enum, "learning-rate schedule", Allowed: Schedulers),
        new("lr_scheduler_kwargs", ValueKind.Dict, "num_cycles (cosine_with_restarts), power and lr_end (polynomial)"),
        new("warmup_steps", ValueKind.IntOrFraction, "warmup: steps, or a fraction of the total below 1"),
        new("warmup_ratio", ValueKind.Number, "warmup as a fraction of the total (deprecated: use warmup_steps < 1)", Min: 0, Max: 1),
        new("optim", ValueKind.Enum, "optimizer", Allowed: Optimizers),
        new("logging_strategy", ValueKind.Enum, "when to log", Allowed: Strategies),
        new("logging_steps", ValueKind.IntOrFraction, "log every N steps (below 1: a fraction of the total)"),
        new("logging_first_step", ValueKind.Bool, "log the first step too"),
        new("eval_strategy", ValueKind.Enum, "when to evaluate", Allowed: Strategies),
        new("eval_steps", ValueKind.IntOrFraction, "evaluate every N steps (below 1: a fraction of the total; default: logging_steps)"),
        new("eval_on_start", ValueKind.Bool, "evaluate once before training (a sanity check of the eval loop)"),
        new("save_strategy", ValueKind.Enum, "when to save a checkpoint (best: when an evaluation improves the best metric)", Allowed: SaveStrategies),
        new("save_steps", ValueKind.IntOrFraction, "save every N steps (below 1: a fraction of the total)"),
        new("save_total_limit", ValueKind.Int, "keep at most N checkpoints (the best is kept too)", Min: 1),
        new("load_best_model_at_end", ValueKind.Bool, "restore the best checkpoint at the end"),
        new("metric_for_best_model", ValueKind.String, "metric that picks the best checkpoint (default eval loss)"),
        new("greater_is_better", ValueKind.Bool, "whether a larger metric is better"),
        new("early_stopping_patience", ValueKind.Int, "stop after N evaluations without improvement", Min: 1),
        new("early_stopping_threshold", ValueKind.Number, "minimum improvement that counts", Min: 0),
        new("seed", ValueKind.Int, "random seed (initialisation, dropout, shuffling)", Min: 0),
        new("data_seed", ValueKind.Int, "seed for data shuffling only", Min: 0),
        new("gradient_checkpointing", ValueKind.Bool, "recompute activations in backward to save memory"),
        new("resume_from_checkpoint", ValueKind.BoolOrString, "a checkpoint folder, or true for the latest in output_dir"),
        new("report_to", ValueKind.StringOrStringList, "where logs go besides metrics.jsonl: none, jsonl, tensorboard (event files in logging_dir), all"),
        new("logging_dir", ValueKind.String, "TensorBoard event files (default: output_dir/runs)"),
        new("run_name", ValueKind.String, "a name for the run (report title, TensorBoard folder)"),
        new("bf16", ValueKind.Bool, "bfloat16 autocast: frozen base linears multiply bf16-rounded activations and weights (f32 accumulation; AVX512-BF16 where present); LoRA, norms, attention and the loss stay f32"),
        new("fp16", ValueKind.Bool, "float16 mixed precision (CPU: computes in float32; see model.dtype for 16-bit weights)"),
        new("neftune_noise_alpha", ValueKind.Number, "NEFTune: noise on the input embeddings in training (5 is typical)", Min: 0, MinExclusive: true),
    ];

    public static TrainingArguments FromJson(JsonObject o)
    {
        var t = new TrainingArguments();
        t.OutputDir = o.Str("output_dir", t.OutputDir)!;
        t.LearningRate = o.Num("learning_rate", t.LearningRate);
        t.NumTrainEpochs = o.Num("num_train_epochs", t.NumTrainEpochs);
        t.MaxSteps = o.Int("max_steps", t.MaxSteps);
        t.PerDeviceTrainBatchSize = o.Int("per_device_train_batch_size", t.PerDeviceTrainBatchSize);
        t.PerDeviceEvalBatchSize = o.Int("per_device_eval_batch_size", t.PerDeviceEvalBatchSize);
        t.GradientAccumulationSteps = o.Int("gradient_accumulation_steps", t.GradientAccumulationSteps);
        t.WeightDecay = o.Num("weight_decay", t.WeightDecay);
        t.AdamBeta1 = o.Num("adam_beta1", t.AdamBeta1);
        t.AdamBeta2 = o.Num("adam_beta2", t.AdamBeta2);
        t.AdamEpsilon = o.Num("adam_epsilon", t.AdamEpsilon);
        t.MaxGradNorm = o.Num("max_grad_norm", t.MaxGradNorm);
        t.LrSchedulerType = o.Str("lr_scheduler_type", t.LrSchedulerType)!;
        t.LrSchedulerKwargs = o["lr_scheduler_kwargs"] as JsonObject is { } kw ? (JsonObject)kw.DeepClone() : [];
        t.WarmupSteps = o.Num("warmup_steps", t.WarmupSteps);
        t.WarmupRatio = o.Num("warmup_ratio", t.WarmupRatio);
        t.Optim = o.Str("optim", t.Optim)!;
        t.LoggingStrategy = Strategy(o, "logging_strategy", t.LoggingStrategy);
        t.LoggingSteps = o.Num("logging_steps", t.LoggingSteps);
        t.LoggingFirstStep = o.Bool("logging_first_step", t.LoggingFirstStep);
        t.EvalStrategy = Strategy(o, "eval_strategy", t.EvalStrategy);
        t.EvalSteps = o.NumOrNull("eval_steps");
        t.EvalOnStart = o.Bool("eval_on_start", t.EvalOnStart);
        t.SaveStrategy = o.Str("save_strategy") switch
        {
            "no" => SaveStrategy.No,
            "epoch" => SaveStrategy.Epoch,
            "best" => SaveStrategy.Best,
            "steps" => SaveStrategy.Steps,
            _ => t.SaveStrategy,
        };
        t.SaveSteps = o.Num("save_steps", t.SaveSteps);
        t.LoggingDir = o.Str("logging_dir");
        t.RunName = o.Str("run_name");
        t.Bf16 = o.Bool("bf16", false);
        t.Fp16 = o.Bool("fp16", false);
        t.NeftuneNoiseAlpha = o.NumOrNull("neftune_noise_alpha");
        t.ReportTo = ReportTargets(o["report_to"]);
        t.SaveTotalLimit = o.IntOrNull("save_total_limit");
        t.LoadBestModelAtEnd = o.Bool("load_best_model_at_end", t.LoadBestModelAtEnd);
        t.MetricForBestModel = o.Str("metric_for_best_model");
        t.GreaterIsBetter = o.BoolOrNull("greater_is_better");
        t.EarlyStoppingPatience = o.IntOrNull("early_stopping_patience");
        t.EarlyStoppingThreshold = o.Num("early_stopping_threshold", t.EarlyStoppingThreshold);
        t.Seed = o.Int("seed", t.Seed);
        t.DataSeed = o.IntOrNull("data_seed");
        t.GradientCheckpointing = o.Bool("gradient_checkpointing", t.GradientCheckpointing);
        // transformers takes a path or a bool: true resumes from the latest checkpoint, false starts afresh.
        t.ResumeFromCheckpoint = o["resume_from_checkpoint"] is JsonValue v && v.GetValueKind() is System.Text.Json.JsonValueKind.True ? "true"
            : o.Str("resume_from_checkpoint");
        t.Validate();
        return t;
    }

    /// <summary>report_to as transformers takes it (a name or a list); integrations that need a service are refused by name.</summary>
    private static IReadOnlyList<string> ReportTargets(JsonNode? node)
    {
        if (node == null) return ["jsonl"];
        var names = node is JsonArray a ? a.Select(x => (string)x!).ToList() : [(string)node!];
        var result = new List<string>();
        foreach (var n in names)
        {
            if (!Reporters.Contains(n))
                throw new PeftSharpException($"training.report_to: \"{n}\" is not available here (it needs its own service and package); " +
                    $"use one of {string.Join(", ", Reporters)}: metrics.jsonl is always written, tensorboard writes event files TensorBoard reads.");
            if (n == "all") result.AddRange(["jsonl", "tensorboard"]);
            else if (n != "none") result.Add(n);
        }
        return result.Distinct().ToList();
    }

    /// <summary>Learning rates above this are refused: an update of about this size per step destroys any pretrained weight.</summary>
    public const double MaxLearningRate = 1.0;

    /// <summary>Learning rates above this get a warning (LoRA trains at 1e-4..3e-4, full fine-tuning at 1e-5..5e-5).</summary>
    public const double HighLearningRate = 1e-2;

    /// <summary>
    /// Cross-key rules, as transformers checks them, and values that cannot train. transformers accepts any
    /// number; here a learning rate above <see cref="MaxLearningRate"/>, a negative or non-finite value, or a
    /// warmup that is not a whole number of steps within int's range is refused by name, and a learning rate
    /// above <see cref="HighLearningRate"/> adds a warning to <paramref name="warnings"/>.
    /// </summary>
    public void Validate(ICollection<string>? warnings = null)
    {
        static void Require(bool ok, string key, double value, string expected)
        {
            if (!ok) throw new PeftSharpException($"training: {key} is {Show(value)}; expected {expected}.");
        }
        static string Show(double v) => double.IsFinite(v) && v == Math.Floor(v) && Math.Abs(v) < 1e15
            ? ((long)v).ToString(System.Globalization.CultureInfo.InvariantCulture) : Formats.PythonJson.FormatFloat(v);
        Require(double.IsFinite(LearningRate) && LearningRate > 0, "learning_rate", LearningRate, "a positive number (LoRA: 1e-4 to 3e-4 is typical)");
        Require(LearningRate <= MaxLearningRate, "learning_rate", LearningRate,
            $"at most {MaxLearningRate} (each step moves a weight by about the learning rate, so training diverges at once; LoRA: 1e-4 to 3e-4 is typical)");
        if (LearningRate > HighLearningRate)
            warnings?.Add($"training.learning_rate {Show(LearningRate)} is high for fine-tuning (LoRA: 1e-4 to 3e-4, full fine-tuning: 1e-5 to 5e-5); the loss may diverge.");
        Require(double.IsFinite(NumTrainEpochs) && NumTrainEpochs > 0, "num_train_epochs", NumTrainEpochs, "a positive number");
        Require(MaxSteps >= -1, "max_steps", MaxSteps, "-1 (use num_train_epochs) or a positive number of steps");
        Require(double.IsFinite(WarmupSteps) && WarmupSteps >= 0 && (WarmupSteps < 1 || (WarmupSteps == Math.Floor(WarmupSteps) && WarmupSteps <= int.MaxValue)),
            "warmup_steps", WarmupSteps, $"a whole number of steps (at most {int.MaxValue}) or a fraction of the total below 1");
        if (MaxSteps > 0 && WarmupSteps >= 1 && WarmupSteps > MaxSteps)
            warnings?.Add($"training.warmup_steps ({WarmupSteps}) is longer than max_steps ({MaxSteps}): the learning rate never reaches its peak.");
        Require(double.IsFinite(WarmupRatio) && WarmupRatio is >= 0 and <= 1, "warmup_ratio", WarmupRatio, "a fraction from 0 to 1");
        Require(double.IsFinite(WeightDecay) && WeightDecay >= 0, "weight_decay", WeightDecay, "a number >= 0");
        Require(AdamBeta1 is >= 0 and < 1, "adam_beta1", AdamBeta1, "a number from 0 up to (not including) 1");
        Require(AdamBeta2 is >= 0 and < 1, "adam_beta2", AdamBeta2, "a number from 0 up to (not including) 1");
        Require(double.IsFinite(AdamEpsilon) && AdamEpsilon > 0, "adam_epsilon", AdamEpsilon, "a positive number");
        Require(double.IsFinite(MaxGradNorm) && MaxGradNorm >= 0, "max_grad_norm", MaxGradNorm, "a number >= 0 (0 disables clipping)");
        Require(double.IsFinite(EarlyStoppingThreshold) && EarlyStoppingThreshold >= 0, "early_stopping_threshold", EarlyStoppingThreshold, "a number >= 0");
        foreach (var (key, value) in new[] { ("per_device_train_batch_size", PerDeviceTrainBatchSize), ("per_device_eval_batch_size", PerDeviceEvalBatchSize),
                     ("gradient_accumulation_steps", GradientAccumulationSteps), ("save_total_limit", SaveTotalLimit ?? 1), ("early_stopping_patience", EarlyStoppingPatience ?? 1) })
            Require(value >= 1, key, value, "a positive whole number");
        Require(Seed >= 0, "seed", Seed, "a number >= 0");
        foreach (var (key, v) in new[] { ("logging_steps", (double?)LoggingSteps), ("eval_steps", EvalSteps), ("save_steps", SaveSteps) })
            if (v is double x && !(x > 0 && (x < 1 || x == Math.Floor(x))))
                throw new PeftSharpException($"training.{key} must be a whole number of steps (at least 1) or a fraction in (0, 1) of the total, got {x}.");
        if (LoadBestModelAtEnd)
        {
            if (EvalStrategy == IntervalStrategy.No)
                throw new PeftSharpException("training: load_best_model_at_end needs eval_strategy \"steps\" or \"epoch\".");
            if (SaveStrategy != SaveStrategy.Best && Name(EvalStrategy) != Name(SaveStrategy))
                throw new PeftSharpException($"training: load_best_model_at_end needs save_strategy to equal eval_strategy (\"{Name(EvalStrategy)}\") or be \"best\", got \"{Name(SaveStrategy)}\".");
            if (EvalStrategy == IntervalStrategy.Steps && SaveStrategy == SaveStrategy.Steps && SaveSteps >= 1 && (EvalSteps ?? LoggingSteps) >= 1
                && SaveSteps % (EvalSteps ?? LoggingSteps) != 0)
                throw new PeftSharpException($"training: load_best_model_at_end needs save_steps ({SaveSteps}) to be a multiple of eval_steps ({EvalSteps ?? LoggingSteps}).");
        }
        if (SaveStrategy == SaveStrategy.Best && EvalStrategy == IntervalStrategy.No)
            throw new PeftSharpException("training: save_strategy \"best\" saves when an evaluation improves metric_for_best_model; it needs eval_strategy \"steps\" or \"epoch\".");
        if (Bf16 && Fp16) throw new PeftSharpException("training: bf16 and fp16 are both true; choose one.");
        if (EarlyStoppingPatience != null && EvalStrategy == IntervalStrategy.No)
            throw new PeftSharpException("training: early_stopping_patience needs eval_strategy \"steps\" or \"epoch\".");
    }

    public static string Name(IntervalStrategy s) => s switch { IntervalStrategy.No => "no", IntervalStrategy.Steps => "steps", _ => "epoch" };

    public static string Name(SaveStrategy s) => s switch { SaveStrategy.No => "no", SaveStrategy.Steps => "steps", SaveStrategy.Epoch => "epoch", _ => "best" };

    private static IntervalStrategy Strategy(JsonObject o, string key, IntervalStrategy fallback) => o.Str(key) switch
    {
        "no" => IntervalStrategy.No,
        "steps" => IntervalStrategy.Steps,
        "epoch" => IntervalStrategy.Epoch,
        _ => fallback,
    };
}
