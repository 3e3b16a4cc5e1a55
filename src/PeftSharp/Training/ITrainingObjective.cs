using PeftSharp.Autograd;

namespace PeftSharp.Training;

/// <summary>
/// What one micro-batch contributed: its loss (the mean over its own targets) and its metrics, each a mean over the same
/// targets unless <paramref name="MetricWeights"/> gives the number of examples it is a mean over (KTO's rewards/chosen is
/// a mean over the desirable examples only; weight 0: this micro-batch has none). The step's value of a metric is the
/// weighted mean over its micro-batches and ranks; a metric whose weights sum to 0 is not reported for that step.
/// </summary>
public readonly record struct MicroBatchResult(double Loss, IReadOnlyDictionary<string, double>? Metrics = null,
    IReadOnlyDictionary<string, double>? MetricWeights = null);

/// <summary>
/// What a trainer specialises in <see cref="Trainer{TBatch}"/>, as TRL's trainers specialise transformers'
/// Trainer: how rows become batches, the loss of a batch with its backward, and the evaluation metrics.
/// The loop (schedule, accumulation, clipping, cadence, checkpoints, resume, distribution) is the trainer's.
/// <para>
/// Rows are numbered 0..<see cref="RowCount"/>-1; the trainer decides which rows each micro-batch takes
/// (the epoch order, and on several processes each rank's share) and asks the objective to collate them.
/// A micro-batch's loss is weighted by its <see cref="TargetCount"/> in the step, so the step's loss is the
/// mean over every target of the global batch whatever the micro-batch size or the number of processes.
/// </para>
/// </summary>
public interface ITrainingObjective<TBatch>
{
    /// <summary>Rows in one epoch of training data.</summary>
    int RowCount { get; }

    /// <summary>The batch of the given rows (their order is the epoch's).</summary>
    TBatch Collate(ReadOnlySpan<int> rows);

    /// <summary>The targets a batch's loss averages over (tokens for SFT, pairs for DPO); weights accumulation and the all-reduce.</summary>
    long TargetCount(TBatch batch);

    /// <summary>The tokens a batch feeds the model (tokens/s, num_input_tokens_seen).</summary>
    long TokenCount(TBatch batch);

    /// <summary>
    /// Forward and backward of one micro-batch: the gradient of <paramref name="scale"/> × its mean loss is added to
    /// the trainable parameters' gradients. The tape is reset afterwards by the objective.
    /// </summary>
    MicroBatchResult Accumulate(Tape tape, TBatch batch, double scale);

    /// <summary>Metrics derived from the step's pooled ones (KTO's rewards/margins = rewards/chosen − rewards/rejected over the whole step).</summary>
    void CompleteStepMetrics(IDictionary<string, double> metrics) { }

    /// <summary>Whether there is evaluation data.</summary>
    bool CanEvaluate { get; }

    /// <summary>The names <see cref="Evaluate"/> returns (without "eval_"), so metric_for_best_model is checked before training.</summary>
    IReadOnlyCollection<string> EvalMetricNames { get; }

    /// <summary>Evaluation metrics without gradients, by name without "eval_" (the trainer adds it).</summary>
    IReadOnlyDictionary<string, double> Evaluate(Tape tape);
}

/// <summary>An objective whose evaluation can be split over the ranks of a run.</summary>
public interface IShardedEvaluation
{
    /// <summary>
    /// The processes of the run: an objective that splits its evaluation over them (each scores a share, the sums are
    /// all-reduced, every rank gets the same metrics). The trainer sets it; an objective without it evaluates whole on every rank.
    /// </summary>
    Distributed.ICommunicator? EvaluationCommunicator { get; set; }
}

/// <summary>
/// An objective whose <see cref="ITrainingObjective{TBatch}.Collate"/> draws random numbers (GRPO samples its rollouts there):
/// before each Collate the trainer gives it the step, the global micro-batch index and the key of that micro-batch's random
/// streams (seed, step, micro-batch), so a run and its resume sample the same completions without saved state.
/// <para>
/// TRL's generation buffer: one generation fills <see cref="StepsPerGeneration"/> micro-batches and is trained on for
/// <see cref="NumIterations"/> passes, a cycle of StepsPerGeneration × NumIterations micro-batches. The trainer then gives
/// Collate the rows of the whole generation batch (StepsPerGeneration × per_device_train_batch_size prompts of the epoch's
/// order; micro-batch k of the epoch belongs to generation batch k / cycle) and the micro-batch's position in its cycle:
/// 0 generates, the others return a slice of what was generated. An epoch is ceil(rows / (StepsPerGeneration × batch))
/// cycles, so every prompt is trained on NumIterations times.
/// </para>
/// </summary>
public interface IRolloutObjective
{
    /// <summary>Micro-batches one generation fills (TRL's steps_per_generation; 1: each micro-batch generates its own).</summary>
    int StepsPerGeneration => 1;

    /// <summary>Passes over a generation's micro-batches before the next generation (TRL's num_iterations).</summary>
    int NumIterations => 1;

    void BeforeCollate(int step, int microBatch, ulong key, int cyclePosition = 0);
}

/// <summary>
/// An objective that holds state across optimizer steps (GRPO's buffered rollouts): a checkpoint saves it beside the trainable
/// state and a resume restores it, so a run resumed in the middle of a generation cycle trains on the same rollouts.
/// </summary>
public interface ICheckpointedObjective
{
    /// <summary>Writes the state into the checkpoint folder being written (it exists).</summary>
    void SaveState(string directory);

    /// <summary>Restores what <see cref="SaveState"/> wrote; a folder without it leaves the objective empty.</summary>
    void LoadState(string directory);
}
