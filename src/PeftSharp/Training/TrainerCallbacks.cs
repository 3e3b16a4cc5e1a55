using System.Text.Json.Nodes;

namespace PeftSharp.Training;

/// <summary>Where training stands after an optimizer step (for progress bars).</summary>
public sealed record TrainingProgress(int Step, int TotalSteps, double Epoch, double Loss, double LearningRate, double GradNorm,
    double TokensPerSecond, TimeSpan Elapsed, TimeSpan Eta)
{
    /// <summary>The objective's own metrics of the step (DPO's rewards/margins, ...), empty for SFT.</summary>
    public IReadOnlyDictionary<string, double> Metrics { get; init; } = new Dictionary<string, double>();
}

/// <summary>Lets callbacks stop training after the current step (as transformers' TrainerControl.should_training_stop).</summary>
public sealed class TrainerControl
{
    public bool ShouldStop { get; set; }

    /// <summary>Save a checkpoint after the current step, whatever save_strategy says (transformers' should_save).</summary>
    public bool ShouldSave { get; set; }
}

/// <summary>Hooks the trainer calls; every method has an empty default.</summary>
public interface ITrainerCallback
{
    /// <summary>After every optimizer step.</summary>
    void OnStep(TrainingProgress progress, TrainerControl control) { }

    /// <summary>Every entry written to log_history and metrics.jsonl (training logs, evaluations, the summary).</summary>
    void OnLog(JsonObject entry) { }

    /// <summary>After each evaluation, with its metrics (eval_loss, eval_perplexity, eval_mean_token_accuracy).</summary>
    void OnEvaluate(IReadOnlyDictionary<string, double> metrics, TrainerControl control) { }

    /// <summary>After a checkpoint folder is complete.</summary>
    void OnSave(string checkpoint) { }
}

/// <summary>Adapts an <see cref="IProgress{T}"/> to the callback interface.</summary>
public sealed class ProgressCallback(IProgress<TrainingProgress> progress) : ITrainerCallback
{
    public void OnStep(TrainingProgress p, TrainerControl control) => progress.Report(p);
}
