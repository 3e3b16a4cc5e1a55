using System.Text.Json.Nodes;
using PeftSharp.Formats;

namespace PeftSharp.Training;

/// <summary>
/// trainer_state.json with transformers' field names (global_step, epoch, log_history, best_metric,
/// best_model_checkpoint, ...). The data position and logging accumulators that exact resume needs are
/// under "peftsharp"; the early-stopping counter sits where transformers keeps it (stateful_callbacks).
/// </summary>
public sealed class TrainerState
{
    public const string FileName = "trainer_state.json";

    public int GlobalStep { get; set; }
    public double Epoch { get; set; }
    public int MaxSteps { get; set; }
    public double NumTrainEpochs { get; set; }
    public int LoggingSteps { get; set; }
    public int? EvalSteps { get; set; }
    public int SaveSteps { get; set; }
    public int TrainBatchSize { get; set; }
    public long NumInputTokensSeen { get; set; }
    public double? BestMetric { get; set; }
    public int? BestGlobalStep { get; set; }
    public string? BestModelCheckpoint { get; set; }
    public List<JsonObject> LogHistory { get; } = [];

    /// <summary>The epoch being run (0-based) and the optimizer steps done in it.</summary>
    public int EpochIndex { get; set; }
    public int StepInEpoch { get; set; }
    public int DataSeed { get; set; }
    /// <summary>Rows in the training set (a resumed run must see the same data for its position to mean anything).</summary>
    public int TrainRows { get; set; }
    /// <summary>Sum of step losses and steps since the last training log (so a resumed run logs the same means).</summary>
    public double LossSinceLog { get; set; }
    public int StepsSinceLog { get; set; }
    /// <summary>Sum of all step losses (train_loss of the summary).</summary>
    public double TotalLoss { get; set; }
    public int EarlyStoppingPatienceCounter { get; set; }
    /// <summary>Micro-batches per optimizer step over every process (accumulation × world size): with the batch size, the global batch.</summary>
    public int GlobalBatchMicroBatches { get; set; } = 1;
    /// <summary>Sums of the objective's step metrics since the last training log (rewards/margins, ...).</summary>
    public SortedDictionary<string, double> MetricsSinceLog { get; } = new(StringComparer.Ordinal);
    /// <summary>Steps that reported each metric since the last training log (a metric may be absent from a step, e.g. KTO's rewards/chosen without desirable examples).</summary>
    public SortedDictionary<string, double> MetricStepsSinceLog { get; } = new(StringComparer.Ordinal);

    public JsonObject ToJson() => new()
    {
        ["best_global_step"] = BestGlobalStep,
        ["best_metric"] = BestMetric,
        ["best_model_checkpoint"] = BestModelCheckpoint,
        ["epoch"] = Epoch,
        ["eval_steps"] = EvalSteps,
        ["global_step"] = GlobalStep,
        ["is_hyper_param_search"] = false,
        ["is_local_process_zero"] = true,
        ["is_world_process_zero"] = true,
        ["log_history"] = new JsonArray(LogHistory.Select(e => (JsonNode)e.DeepClone()).ToArray()),
        ["logging_steps"] = LoggingSteps,
        ["max_steps"] = MaxSteps,
        ["num_input_tokens_seen"] = NumInputTokensSeen,
        ["num_train_epochs"] = NumTrainEpochs,
        ["save_steps"] = SaveSteps,
        ["stateful_callbacks"] = new JsonObject
        {
            ["EarlyStoppingCallback"] = new JsonObject
            {
                ["attributes"] = new JsonObject { ["early_stopping_patience_counter"] = EarlyStoppingPatienceCounter },
            },
        },
        ["total_flos"] = 0,
        ["train_batch_size"] = TrainBatchSize,
        ["trial_name"] = null,
        ["trial_params"] = null,
        ["peftsharp"] = new JsonObject
        {
            ["epoch_index"] = EpochIndex,
            ["step_in_epoch"] = StepInEpoch,
            ["data_seed"] = DataSeed,
            ["train_rows"] = TrainRows,
            ["loss_since_log"] = LossSinceLog,
            ["steps_since_log"] = StepsSinceLog,
            ["total_loss"] = TotalLoss,
            ["global_batch_micro_batches"] = GlobalBatchMicroBatches,
            ["metrics_since_log"] = new JsonObject(MetricsSinceLog.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["metric_steps_since_log"] = new JsonObject(MetricStepsSinceLog.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
        },
    };

    public void Write(string path) => AtomicFile.WriteAllText(path, ToJson().ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");

    public static TrainerState Read(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: missing; not a complete checkpoint.");
        var node = JsonInput.ParseNode(File.ReadAllText(path), path);
        var o = node as JsonObject ?? throw new PeftSharpException($"{path}: expected a JSON object.");
        var p = o["peftsharp"] as JsonObject ?? throw new PeftSharpException($"{path}: no \"peftsharp\" section; this checkpoint was not written by PeftSharp's trainer.");

        T Get<T>(JsonObject from, string key, string where, bool required = true, T fallback = default!)
        {
            var node = from[key];
            if (node == null)
                return required ? throw new PeftSharpException($"{path}: {where}{key} is missing; the checkpoint is incomplete.") : fallback;
            try
            {
                if (node is JsonValue v && v.TryGetValue<T>(out var value)) return value;
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException or OverflowException) { }
            throw new PeftSharpException($"{path}: {where}{key} must be {(typeof(T) == typeof(string) ? "a string" : "a number")}, got {node.ToJsonString()}.");
        }
        int NonNegative(JsonObject from, string key, string where, bool required = true)
        {
            int v = Get<int>(from, key, where, required);
            return v >= 0 ? v : throw new PeftSharpException($"{path}: {where}{key} is {v}; it cannot be negative.");
        }
        double Finite(JsonObject from, string key, string where)
        {
            double v = Get<double>(from, key, where);
            return double.IsFinite(v) ? v : throw new PeftSharpException($"{path}: {where}{key} is not a finite number.");
        }

        var s = new TrainerState
        {
            GlobalStep = NonNegative(o, "global_step", ""),
            Epoch = Finite(o, "epoch", ""),
            MaxSteps = Get<int>(o, "max_steps", ""),
            NumTrainEpochs = Get<double>(o, "num_train_epochs", ""),
            LoggingSteps = NonNegative(o, "logging_steps", ""),
            EvalSteps = o["eval_steps"] == null ? null : NonNegative(o, "eval_steps", ""),
            SaveSteps = NonNegative(o, "save_steps", ""),
            TrainBatchSize = NonNegative(o, "train_batch_size", ""),
            NumInputTokensSeen = Get<long>(o, "num_input_tokens_seen", ""),
            BestMetric = o["best_metric"] == null ? null : Get<double>(o, "best_metric", ""),
            BestGlobalStep = o["best_global_step"] == null ? null : NonNegative(o, "best_global_step", ""),
            BestModelCheckpoint = o["best_model_checkpoint"] == null ? null : Get<string>(o, "best_model_checkpoint", ""),
            EpochIndex = NonNegative(p, "epoch_index", "peftsharp."),
            StepInEpoch = NonNegative(p, "step_in_epoch", "peftsharp."),
            DataSeed = Get<int>(p, "data_seed", "peftsharp."),
            TrainRows = NonNegative(p, "train_rows", "peftsharp.", required: false),
            LossSinceLog = Finite(p, "loss_since_log", "peftsharp."),
            StepsSinceLog = NonNegative(p, "steps_since_log", "peftsharp."),
            TotalLoss = Finite(p, "total_loss", "peftsharp."),
            EarlyStoppingPatienceCounter = (o["stateful_callbacks"]?["EarlyStoppingCallback"]?["attributes"] as JsonObject) is { } es
                ? NonNegative(es, "early_stopping_patience_counter", "stateful_callbacks.EarlyStoppingCallback.attributes.", required: false) : 0,
            GlobalBatchMicroBatches = p["global_batch_micro_batches"] == null ? 0 : NonNegative(p, "global_batch_micro_batches", "peftsharp."),
        };
        if (s.GlobalBatchMicroBatches == 0) s.GlobalBatchMicroBatches = -1; // written before it was recorded: checked by batch size alone
        if (p["metrics_since_log"] is JsonObject m)
            foreach (var (k, _) in m) s.MetricsSinceLog[k] = Finite(m, k, "peftsharp.metrics_since_log.");
        if (p["metric_steps_since_log"] is JsonObject ms)
            foreach (var (k, _) in ms) s.MetricStepsSinceLog[k] = Finite(ms, k, "peftsharp.metric_steps_since_log.");
        if (o["log_history"] is JsonArray history)
            foreach (var e in history) if (e is JsonObject entry) s.LogHistory.Add((JsonObject)entry.DeepClone());
        return s;
    }
}
