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
        },
    };

    public void Write(string path) => AtomicFile.WriteAllText(path, ToJson().ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");

    public static TrainerState Read(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: missing; not a complete checkpoint.");
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PeftSharpException($"{path}: expected a JSON object."); }
        catch (System.Text.Json.JsonException e) { throw new PeftSharpException($"{path}: not valid JSON ({e.Message}).", e); }
        var p = o["peftsharp"] as JsonObject ?? throw new PeftSharpException($"{path}: no \"peftsharp\" section; this checkpoint was not written by PeftSharp's trainer.");
        var s = new TrainerState
        {
            GlobalStep = (int)o["global_step"]!,
            Epoch = (double)o["epoch"]!,
            MaxSteps = (int)o["max_steps"]!,
            NumTrainEpochs = (double)o["num_train_epochs"]!,
            LoggingSteps = (int)o["logging_steps"]!,
            EvalSteps = (int?)o["eval_steps"],
            SaveSteps = (int)o["save_steps"]!,
            TrainBatchSize = (int)o["train_batch_size"]!,
            NumInputTokensSeen = (long)o["num_input_tokens_seen"]!,
            BestMetric = (double?)o["best_metric"],
            BestGlobalStep = (int?)o["best_global_step"],
            BestModelCheckpoint = (string?)o["best_model_checkpoint"],
            EpochIndex = (int)p["epoch_index"]!,
            StepInEpoch = (int)p["step_in_epoch"]!,
            DataSeed = (int)p["data_seed"]!,
            TrainRows = (int?)p["train_rows"] ?? 0,
            LossSinceLog = (double)p["loss_since_log"]!,
            StepsSinceLog = (int)p["steps_since_log"]!,
            TotalLoss = (double)p["total_loss"]!,
            EarlyStoppingPatienceCounter = (int?)o["stateful_callbacks"]?["EarlyStoppingCallback"]?["attributes"]?["early_stopping_patience_counter"] ?? 0,
        };
        if (o["log_history"] is JsonArray history)
            foreach (var e in history) if (e is JsonObject entry) s.LogHistory.Add((JsonObject)entry.DeepClone());
        return s;
    }
}
