using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Training.Distributed;
using PeftSharp.Training.Optimizers;

namespace PeftSharp.Training;

/// <summary>What <see cref="Trainer{TBatch}.Train"/> returns.</summary>
public sealed record TrainResult(int GlobalStep, double TrainingLoss, IReadOnlyList<double> StepLosses, string? BestModelCheckpoint,
    bool StoppedEarly, TrainerState State)
{
    /// <summary>The checkpoint folder this run resumed from (resume_from_checkpoint), or null.</summary>
    public string? ResumedFrom { get; init; }

    /// <summary>What the run noticed and the user should know (a loss that exploded without reaching NaN).</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>With <see cref="TrainerOptions.ProfileSteps"/>: the optimizer steps' time by part, summed over the run's steps.</summary>
    public StepProfile? Profile { get; init; }
}

/// <summary>Optional parts of a <see cref="Trainer{TBatch}"/>.</summary>
public sealed class TrainerOptions
{
    /// <summary>What checkpoints save (default: the trainable parameters in trainable.safetensors).</summary>
    public ITrainableState? Trainable { get; init; }
    public IEnumerable<ITrainerCallback>? Callbacks { get; init; }
    /// <summary>Shuffle the rows every epoch (data.shuffle).</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>The processes of a data-parallel run (default: this one alone).</summary>
    public ICommunicator? Communicator { get; init; }
    /// <summary>
    /// ZeRO stage 1: with several processes, each keeps AdamW's state for its share of the parameters only and the updated
    /// parameters are broadcast from their owners (<see cref="ZeroOneAdamW"/>; the same update as unsharded). 32-bit AdamW
    /// only: other optimizers keep their whole state on every rank.
    /// </summary>
    public bool ShardOptimizerState { get; init; }
    /// <summary>
    /// Writes the run's final output (the adapter or the model) into output_dir after the last step; the run's
    /// trainer_state.json and metrics.jsonl are written only once it has succeeded.
    /// </summary>
    public Action<string>? SaveFinal { get; init; }
    /// <summary>
    /// Runs each optimizer step (collation through the optimizer; not logging, evaluation or saving) under
    /// <see cref="StepProfiler"/> and returns the sum in <see cref="TrainResult.Profile"/>.
    /// </summary>
    public bool ProfileSteps { get; init; }
}

/// <summary>
/// transformers' Trainer loop on the autograd engine, shared by every objective (SFT, reward, DPO/KTO/ORPO, GRPO).
/// <para>
/// An optimizer step takes the next global batch of gradient_accumulation_steps × world size micro-batches of
/// per_device_train_batch_size rows in the epoch's order; each process runs its own gradient_accumulation_steps of
/// them. Each micro-batch's mean loss is scaled by its share of the global batch's targets before backward (the
/// target count is all-reduced), so the accumulated gradient is that of the mean loss over every target of the
/// global batch (transformers ≥ 4.46 with num_items_in_batch), the same for any micro-batch size or world size.
/// Then the gradients are all-reduced, clipped to max_grad_norm, the scheduler's learning rate applied and the
/// optimizer stepped; then logging, evaluation and saving as the strategies ask (in that order). Steps per epoch
/// = ceil(micro-batches / (accumulation × world size)); max_steps &gt; 0 overrides num_train_epochs.
/// </para>
/// <para>
/// Determinism and exact resume: the epoch order is a Fisher-Yates shuffle seeded by (data_seed or seed, epoch),
/// and every random stream of a micro-batch (LoRA dropout, NEFTune noise: <see cref="IRandomStreams"/>) is keyed by
/// (seed, step, global micro-batch index). A checkpoint keeps the trainable bytes, the optimizer state, the position
/// and the logging accumulators; nothing random needs saving, and a resumed run reproduces the uninterrupted run's
/// losses and parameters bit for bit.
/// </para>
/// </summary>
public sealed class Trainer<TBatch>
{
    private readonly ICausalLM _model;
    private readonly TrainingArguments _args;
    private readonly ITrainingObjective<TBatch> _objective;
    private readonly ITrainableState _trainable;
    private readonly IReadOnlyList<ITrainerCallback> _callbacks;
    private readonly ICommunicator _comm;
    private readonly bool _shuffle;
    private readonly Action<string>? _saveFinal;
    private readonly List<IRandomStreams> _randomStreams;
    private readonly bool _shardOptimizer;
    private readonly bool _profileSteps;
    private readonly IRolloutObjective? _rollout;
    private float[]? _gradientBucket;

    public Trainer(ICausalLM model, TrainingArguments args, ITrainingObjective<TBatch> objective, TrainerOptions? options = null)
    {
        options ??= new TrainerOptions();
        _model = model;
        _args = args;
        _objective = objective;
        _trainable = options.Trainable ?? new ParameterTrainableState(model.Parameters);
        if (objective is ICheckpointedObjective checkpointed) _trainable = new WithObjectiveState(_trainable, checkpointed);
        _rollout = objective as IRolloutObjective;
        _callbacks = options.Callbacks?.ToList() ?? [];
        _comm = options.Communicator ?? SingleProcess.Instance;
        _shuffle = options.Shuffle;
        _saveFinal = options.SaveFinal;
        _shardOptimizer = options.ShardOptimizerState;
        _profileSteps = options.ProfileSteps;
        if (objective is IShardedEvaluation sharded && _comm.Size > 1) sharded.EvaluationCommunicator = _comm;
        _randomStreams = model.Linears.Select(s => s.Layer).OfType<IRandomStreams>().ToList();
        if (model is IRandomStreams m) _randomStreams.Add(m);
        args.Validate();
        if (objective.RowCount == 0) throw new PeftSharpException("training: the training set is empty.");
        if (args.EvalStrategy != IntervalStrategy.No && !objective.CanEvaluate)
            throw new PeftSharpException($"training: eval_strategy \"{TrainingArguments.Name(args.EvalStrategy)}\" needs evaluation data (data.eval_file or data.test_size).");
        if (args.EvalOnStart && !objective.CanEvaluate)
            throw new PeftSharpException("training: eval_on_start needs evaluation data (data.eval_file or data.test_size).");
        if (args.SaveStrategy == SaveStrategy.Best && !objective.CanEvaluate)
            throw new PeftSharpException("training: save_strategy \"best\" saves when an evaluation improves the best metric; it needs evaluation data and an eval_strategy.");
        if (args.EvalStrategy != IntervalStrategy.No && !objective.EvalMetricNames.Contains(BestMetricKey["eval_".Length..]))
        {
            // Unset, metric_for_best_model means the loss (transformers): an evaluation without one (GRPO's) tracks no best
            // metric unless something needs it; set explicitly, or needed by best-saving / early stopping, it must exist.
            bool needed = args.MetricForBestModel != null || args.SaveStrategy == SaveStrategy.Best || args.LoadBestModelAtEnd
                || args.EarlyStoppingPatience != null;
            if (needed)
                throw new PeftSharpException(args.MetricForBestModel == null
                    ? $"training.metric_for_best_model is not set, so it is the loss, which this run's evaluation does not report; " +
                      $"set it to one of: {string.Join(", ", objective.EvalMetricNames)}."
                    : $"training.metric_for_best_model: no metric \"{args.MetricForBestModel}\" in this run's evaluation; " +
                      $"available: {string.Join(", ", objective.EvalMetricNames)}.");
            _tracksBestMetric = false;
        }
        if (!model.Parameters.Any(p => p.RequiresGrad)) throw new PeftSharpException("training: the model has no trainable parameters.");
        if (_rollout != null && (_rollout.StepsPerGeneration < 1 || _rollout.NumIterations < 1))
            throw new ArgumentException("a rollout objective needs StepsPerGeneration and NumIterations of at least 1.");
        if (_rollout != null && _comm.Size > 1 && args.GradientAccumulationSteps % RolloutCycle != 0)
            throw new PeftSharpException($"grpo: steps_per_generation × num_iterations ({RolloutCycle}) must divide gradient_accumulation_steps " +
                $"({args.GradientAccumulationSteps}) in a data-parallel run, so each rank's generation cycles stay within its own micro-batches of a step.");
    }

    /// <summary>Micro-batches of one rollout cycle (steps_per_generation × num_iterations; 1 for other objectives).</summary>
    private int RolloutCycle => _rollout == null ? 1 : _rollout.StepsPerGeneration * _rollout.NumIterations;

    /// <summary>Prompts one generation takes: steps_per_generation × per_device_train_batch_size (the batch size for other objectives).</summary>
    private int RowsPerCollate => (_rollout?.StepsPerGeneration ?? 1) * _args.PerDeviceTrainBatchSize;

    public int WorldSize => _comm.Size;
    public int MicroBatchesPerEpoch => (_objective.RowCount + RowsPerCollate - 1) / RowsPerCollate * RolloutCycle;
    public int MicroBatchesPerStep => _args.GradientAccumulationSteps * _comm.Size;
    public int StepsPerEpoch => Math.Max(1, (MicroBatchesPerEpoch + MicroBatchesPerStep - 1) / MicroBatchesPerStep);
    public int TotalSteps => _args.MaxSteps > 0 ? _args.MaxSteps : Math.Max(1, (int)Math.Ceiling(_args.NumTrainEpochs * StepsPerEpoch));

    /// <summary>The metric key that picks the best checkpoint (metric_for_best_model, "eval_" added; default eval_loss).</summary>
    public string BestMetricKey => TrainingArguments.BestMetricKey(_args.MetricForBestModel);

    /// <summary>False when the evaluation reports no loss and nothing asked for a best metric (see the constructor).</summary>
    private readonly bool _tracksBestMetric = true;

    private bool GreaterIsBetter => _args.GreaterIsBetter ?? !BestMetricKey.EndsWith("loss", StringComparison.Ordinal) && BestMetricKey != "eval_perplexity";

    private bool IsWriter => _comm.Rank == 0;

    public TrainResult Train(CancellationToken cancellation = default)
    {
        var args = _args;
        string outputDir = args.OutputDir;
        if (IsWriter) Directory.CreateDirectory(outputDir);
        using var runLock = IsWriter ? OutputLock.Acquire(outputDir) : null;
        if (IsWriter) Checkpointing.RemoveStaleTemporaries(outputDir);
        if (args.GradientCheckpointing && _model is IGradientCheckpointing gc) gc.GradientCheckpointing = true;
        int total = TotalSteps, perEpoch = StepsPerEpoch, accumulation = args.GradientAccumulationSteps;
        var schedule = LrSchedule.From(args, total);
        using var optimizer = _shardOptimizer && _comm.Size > 1 && ZeroOneAdamW.Supports(args.Optim) ? ZeroOneAdamW.Create(args, _model.Parameters, _comm) : Optimizer.Create(args, _model.Parameters);
        var state = new TrainerState
        {
            MaxSteps = total, NumTrainEpochs = Math.Ceiling((double)total / perEpoch), LoggingSteps = args.LoggingStepsFor(total),
            EvalSteps = args.EvalStepsFor(total), SaveSteps = args.SaveStepsFor(total), TrainBatchSize = args.PerDeviceTrainBatchSize,
            DataSeed = args.DataSeed ?? args.Seed, TrainRows = _objective.RowCount, GlobalBatchMicroBatches = MicroBatchesPerStep,
        };
        int loggingSteps = state.LoggingSteps, evalSteps = state.EvalSteps ?? loggingSteps, saveSteps = state.SaveSteps;
        var log = new RunLog(outputDir, IsWriter, _callbacks, args.ReportTo, args.LoggingDir ?? Path.Combine(outputDir, "runs"));
        string? resume = Checkpointing.ResolveResume(args);
        if (resume != null) state = Checkpointing.Restore(resume, state, _trainable, optimizer, perEpoch);
        log.Start(state.LogHistory);

        var control = new TrainerControl();
        var stepLosses = new List<double>();
        var warnings = new List<string>();
        using var tape = new Tape();
        using var stopProfiling = _profileSteps ? StepProfiler.CancelOnDispose() : null;
        StepProfile? profile = null;
        var clock = Stopwatch.StartNew();
        long tokensThisRun = 0;
        int stepsThisRun = 0;
        bool stoppedEarly = false;
        int epochs = (total + perEpoch - 1) / perEpoch;
        var batches = new List<(TBatch Batch, int GlobalMicro)>(accumulation);
        ulong seedKey = Rng.FoldIn(0x5EED, (ulong)(uint)args.Seed);

        if (args.EvalOnStart && state.GlobalStep == 0 && resume == null)
            stoppedEarly |= EvaluateAndTrack(state, tape, log, control);

        for (int epoch = state.EpochIndex; epoch < epochs && state.GlobalStep < total && !control.ShouldStop; epoch++)
        {
            var order = EpochOrder(state.DataSeed, epoch);
            int firstStep = epoch == state.EpochIndex ? state.StepInEpoch : 0;
            state.EpochIndex = epoch;
            for (int s = firstStep; s < perEpoch && state.GlobalStep < total; s++)
            {
                cancellation.ThrowIfCancellationRequested();
                if (_profileSteps) StepProfiler.Start();
                batches.Clear();
                int step = state.GlobalStep + 1;
                ulong stepKey = Rng.FoldIn(seedKey, (ulong)step);
                for (int j = 0; j < accumulation; j++)
                {
                    int global = _comm.Rank * accumulation + j, k = s * MicroBatchesPerStep + global;
                    if (k >= MicroBatchesPerEpoch) break;
                    // A rollout objective's micro-batch k belongs to generation batch k / cycle (the rows it generates for).
                    int start = k / RolloutCycle * RowsPerCollate, n = Math.Min(RowsPerCollate, order.Length - start);
                    _rollout?.BeforeCollate(step, global, Rng.FoldIn(stepKey, (ulong)global), k % RolloutCycle);
                    batches.Add((_objective.Collate(order.AsSpan(start, n)), global));
                }
                var (loss, stepTokens, metrics) = AccumulateGradients(tape, batches, stepKey);
                if (!double.IsFinite(loss))
                    throw new PeftSharpException($"training: the loss at step {step} is {loss.ToString(CultureInfo.InvariantCulture)}; training stopped " +
                        $"before the optimizer step. Last good checkpoint: {Checkpointing.Latest(outputDir) ?? "none"}. Try a lower learning_rate or max_grad_norm.");
                AllReduceGradients(optimizer.Parameters);
                float gradNorm = args.MaxGradNorm > 0 ? GradientNorm.Clip(optimizer.Parameters, (float)args.MaxGradNorm) : GradientNorm.Compute(optimizer.Parameters);
                if (!float.IsFinite(gradNorm))
                    throw new PeftSharpException($"training: the gradient norm at step {step} is {gradNorm.ToString(CultureInfo.InvariantCulture)}; training stopped " +
                        $"before the optimizer step. Last good checkpoint: {Checkpointing.Latest(outputDir) ?? "none"}.");
                double lr = schedule.LearningRate(state.GlobalStep);
                if (!double.IsFinite(lr) || lr < 0)
                    throw new PeftSharpException($"training: the learning rate at step {step} is {lr.ToString(CultureInfo.InvariantCulture)}; check learning_rate and lr_scheduler_kwargs.");
                optimizer.LearningRate = (float)lr;
                using (StepProfiler.Enter(StepPart.Optimizer))
                {
                    optimizer.Step();
                    optimizer.ZeroGrad();
                }
                if (_profileSteps) profile = StepProfile.Sum(profile, StepProfiler.Stop());

                state.GlobalStep = step;
                state.StepInEpoch = s + 1;
                state.Epoch = epoch + (double)(s + 1) / perEpoch;
                state.NumInputTokensSeen += stepTokens;
                state.LossSinceLog += loss;
                state.StepsSinceLog++;
                state.TotalLoss += loss;
                foreach (var (name, value) in metrics)
                {
                    state.MetricsSinceLog[name] = state.MetricsSinceLog.GetValueOrDefault(name) + value;
                    state.MetricStepsSinceLog[name] = state.MetricStepsSinceLog.GetValueOrDefault(name) + 1;
                }
                stepLosses.Add(loss);
                if (ExplosionWarning(stepLosses, step) is { } exploded)
                {
                    warnings.Add(exploded);
                    var warning = new JsonObject { ["warning"] = exploded, ["step"] = step };
                    foreach (var c in _callbacks) c.OnLog(warning);
                }
                tokensThisRun += stepTokens;
                stepsThisRun++;

                double seconds = Math.Max(1e-9, clock.Elapsed.TotalSeconds);
                double tokensPerSecond = tokensThisRun / seconds;
                var eta = TimeSpan.FromSeconds(seconds / stepsThisRun * (total - step));
                var progress = new TrainingProgress(step, total, state.Epoch, loss, lr, gradNorm, tokensPerSecond, clock.Elapsed, eta) { Metrics = metrics };
                foreach (var c in _callbacks) c.OnStep(progress, control);
                AgreeOnControl(control);

                bool epochEnd = s + 1 == perEpoch, last = step == total;
                if (Due(args.LoggingStrategy, loggingSteps, step, epochEnd) || (step == 1 && args.LoggingFirstStep))
                {
                    var entry = new JsonObject { ["loss"] = Round(state.LossSinceLog / state.StepsSinceLog) };
                    foreach (var (name, sum) in state.MetricsSinceLog) entry[name] = Round(sum / state.MetricStepsSinceLog.GetValueOrDefault(name, state.StepsSinceLog));
                    entry["grad_norm"] = gradNorm;
                    entry["learning_rate"] = lr;
                    entry["tokens_per_second"] = Math.Round(tokensPerSecond, 2);
                    entry["num_tokens"] = state.NumInputTokensSeen;
                    entry["epoch"] = Math.Round(state.Epoch, 4);
                    entry["step"] = step;
                    state.LossSinceLog = 0;
                    state.StepsSinceLog = 0;
                    state.MetricsSinceLog.Clear();
                    state.MetricStepsSinceLog.Clear();
                    log.Write(state, entry);
                }
                bool improved = false;
                if (_objective.CanEvaluate && Due(args.EvalStrategy, evalSteps, step, epochEnd))
                {
                    int? bestBefore = state.BestGlobalStep;
                    stoppedEarly |= EvaluateAndTrack(state, tape, log, control);
                    improved = state.BestGlobalStep == step && bestBefore != step;
                }
                bool save = args.SaveStrategy switch
                {
                    SaveStrategy.Steps => Due(IntervalStrategy.Steps, saveSteps, step, epochEnd) || last,
                    SaveStrategy.Epoch => epochEnd || last,
                    SaveStrategy.Best => improved,
                    _ => false,
                };
                if (save || control.ShouldSave)
                {
                    DistributedRun.CheckReplicas(_comm, optimizer.Parameters, step);
                    (optimizer as IShardedOptimizer)?.GatherForSave();
                    if (IsWriter) Checkpointing.Save(args, state, _trainable, optimizer, schedule, _callbacks);
                    control.ShouldSave = false;
                }
                if (control.ShouldStop) break;
            }
        }

        if (args.LoadBestModelAtEnd && state.BestModelCheckpoint != null && Directory.Exists(state.BestModelCheckpoint))
            _trainable.Load(state.BestModelCheckpoint);
        if (IsWriter) _saveFinal?.Invoke(outputDir);
        var summary = new JsonObject
        {
            ["train_loss"] = state.GlobalStep == 0 ? 0 : state.TotalLoss / state.GlobalStep,
            ["train_runtime"] = Math.Round(clock.Elapsed.TotalSeconds, 4),
            ["train_tokens_per_second"] = Math.Round(tokensThisRun / Math.Max(1e-9, clock.Elapsed.TotalSeconds), 2),
            ["epoch"] = Math.Round(state.Epoch, 4),
            ["step"] = state.GlobalStep,
        };
        log.Write(state, summary);
        log.Finish(state);
        return new TrainResult(state.GlobalStep, state.GlobalStep == 0 ? 0 : state.TotalLoss / state.GlobalStep, stepLosses,
            state.BestModelCheckpoint, stoppedEarly, state) { ResumedFrom = resume, Warnings = warnings, Profile = profile };
    }

    /// <summary>
    /// A loss that explodes without reaching NaN: the first step whose loss is more than 4 nats and 3× above the lowest
    /// loss of the run so far gets a warning (once), naming the step and what to try.
    /// </summary>
    private bool _warnedExplosion;

    private string? ExplosionWarning(List<double> losses, int step)
    {
        if (_warnedExplosion || losses.Count < 2) return null;
        double loss = losses[^1], lowest = double.PositiveInfinity;
        for (int i = 0; i < losses.Count - 1; i++) lowest = Math.Min(lowest, losses[i]);
        if (!(loss > lowest + 4 && loss > 3 * lowest)) return null;
        _warnedExplosion = true;
        return $"training: the loss rose from {lowest.ToString("G4", CultureInfo.InvariantCulture)} to {loss.ToString("G4", CultureInfo.InvariantCulture)} " +
            $"at step {step}: the run is diverging. Try a lower learning_rate, a longer warmup or max_grad_norm.";
    }

    /// <summary>The rows of an epoch: 0..n-1, or a Fisher-Yates shuffle driven by (seed, epoch).</summary>
    public int[] EpochOrder(int seed, int epoch)
    {
        var order = Enumerable.Range(0, _objective.RowCount).ToArray();
        if (_shuffle) Data.SftDataset.Shuffle(order, Data.SftDataset.EpochRng(seed, epoch));
        return order;
    }

    /// <summary>Evaluation metrics of the model as it is now, "eval_" prefixed.</summary>
    public IReadOnlyDictionary<string, double> Evaluate()
    {
        using var tape = new Tape();
        return Prefixed(_objective.Evaluate(tape));
    }

    private static Dictionary<string, double> Prefixed(IReadOnlyDictionary<string, double> metrics) =>
        metrics.ToDictionary(kv => "eval_" + kv.Key, kv => kv.Value);

    private (double Loss, long Tokens, Dictionary<string, double> Metrics) AccumulateGradients(Tape tape, List<(TBatch Batch, int GlobalMicro)> batches, ulong stepKey)
    {
        Span<double> totals = stackalloc double[2];
        foreach (var (b, _) in batches)
        {
            totals[0] += _objective.TargetCount(b);
            totals[1] += _objective.TokenCount(b);
        }
        _comm.AllReduceSum(totals);
        double targets = totals[0];
        long tokens = (long)totals[1];
        var metricSums = new SortedDictionary<string, (double Sum, double Weight)>(StringComparer.Ordinal);
        double lossSum = 0;
        if (targets > 0)
            foreach (var (b, globalMicro) in batches)
            {
                long count = _objective.TargetCount(b);
                if (count == 0) continue;
                ulong key = Rng.FoldIn(stepKey, (ulong)globalMicro);
                foreach (var r in _randomStreams) r.Reseed(key);
                var result = _objective.Accumulate(tape, b, count / targets);
                lossSum += result.Loss * count;
                if (result.Metrics != null)
                    foreach (var (name, value) in result.Metrics)
                    {
                        double weight = result.MetricWeights != null && result.MetricWeights.TryGetValue(name, out var w) ? w : count;
                        var (sum, total) = metricSums.GetValueOrDefault(name);
                        metricSums[name] = (sum + (weight > 0 ? value * weight : 0), total + weight);
                    }
            }
        // One all-reduce for the loss and every metric's weighted sum and weight; each rank contributes the same metric names (the objective's).
        var names = metricSums.Keys.ToArray();
        var sums = new double[2 * names.Length + 1];
        sums[0] = lossSum;
        for (int i = 0; i < names.Length; i++) (sums[2 * i + 1], sums[2 * i + 2]) = metricSums[names[i]];
        _comm.AllReduceSum(sums);
        var metrics = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int i = 0; i < names.Length; i++)
            if (sums[2 * i + 2] > 0) metrics[names[i]] = sums[2 * i + 1] / sums[2 * i + 2];
        _objective.CompleteStepMetrics(metrics);
        return (targets > 0 ? sums[0] / targets : 0, tokens, metrics);
    }

    /// <summary>
    /// Sums the gradients over the ranks: parameter after parameter through one flat buffer (one all-reduce when they fit
    /// in 64 Mi floats, else one per bucket of that size), kept between steps.
    /// </summary>
    private unsafe void AllReduceGradients(IReadOnlyList<Parameter> parameters)
    {
        if (_comm.Size == 1) return;
        const long BucketLimit = 64L << 20;
        long length = 0;
        foreach (var p in parameters) length += p.Length;
        int size = (int)Math.Min(length, BucketLimit);
        if (_gradientBucket == null || _gradientBucket.Length < size) _gradientBucket = new float[size];
        var flat = _gradientBucket;
        var pending = new List<(Parameter P, long Offset, int Count, int At)>();
        int used = 0;
        void Flush()
        {
            if (used == 0) return;
            _comm.AllReduceSum(flat.AsSpan(0, used));
            foreach (var (p, offset, count, at) in pending) flat.AsSpan(at, count).CopyTo(new Span<float>(p.Grad + offset, count));
            pending.Clear();
            used = 0;
        }
        foreach (var p in parameters)
            for (long offset = 0; offset < p.Length;)
            {
                if (used == size) Flush();
                int count = (int)Math.Min(p.Length - offset, size - used);
                new ReadOnlySpan<float>(p.Grad + offset, count).CopyTo(flat.AsSpan(used));
                pending.Add((p, offset, count, used));
                used += count;
                offset += count;
            }
        Flush();
    }

    /// <summary>A stop or save asked for on any rank (Ctrl+C reaches one process first) holds on every rank.</summary>
    private void AgreeOnControl(TrainerControl control)
    {
        if (_comm.Size == 1) return;
        Span<double> flags = [control.ShouldStop ? 1 : 0, control.ShouldSave ? 1 : 0];
        _comm.AllReduceSum(flags);
        control.ShouldStop = flags[0] > 0;
        control.ShouldSave = flags[1] > 0;
    }

    private static bool Due(IntervalStrategy strategy, int every, int step, bool epochEnd) => strategy switch
    {
        IntervalStrategy.Steps => every > 0 && step % every == 0,
        IntervalStrategy.Epoch => epochEnd,
        _ => false,
    };

    private static double Round(double x) => Math.Round(x, 6);

    /// <summary>Evaluates, logs, updates the best metric and early stopping; returns true when early stopping fires.</summary>
    private bool EvaluateAndTrack(TrainerState state, Tape tape, RunLog log, TrainerControl control)
    {
        var metrics = Prefixed(_objective.Evaluate(tape));
        var entry = new JsonObject();
        foreach (var (k, v) in metrics) entry[k] = v;
        entry["epoch"] = Math.Round(state.Epoch, 4);
        entry["step"] = state.GlobalStep;
        log.Write(state, entry);
        foreach (var c in _callbacks) c.OnEvaluate(metrics, control);

        if (!_tracksBestMetric) return false;
        double value = metrics[BestMetricKey];
        double? previous = state.BestMetric;
        bool better = previous == null || (GreaterIsBetter ? value > previous : value < previous);
        if (better)
        {
            state.BestMetric = value;
            state.BestGlobalStep = state.GlobalStep;
        }
        if (_args.EarlyStoppingPatience is int patience)
        {
            bool improved = previous == null || (better && Math.Abs(value - previous.Value) > _args.EarlyStoppingThreshold);
            state.EarlyStoppingPatienceCounter = improved ? 0 : state.EarlyStoppingPatienceCounter + 1;
            if (state.EarlyStoppingPatienceCounter >= patience)
            {
                control.ShouldStop = true;
                return true;
            }
        }
        return false;
    }
}
