using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Data;
using PeftSharp.Formats;
using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Training.Optimizers;

namespace PeftSharp.Training;

/// <summary>What <see cref="SftTrainer.Train"/> returns.</summary>
public sealed record TrainResult(int GlobalStep, double TrainingLoss, IReadOnlyList<double> StepLosses, string? BestModelCheckpoint,
    bool StoppedEarly, TrainerState State)
{
    /// <summary>The checkpoint folder this run resumed from (resume_from_checkpoint), or null.</summary>
    public string? ResumedFrom { get; init; }
}

/// <summary>
/// TRL's SFTTrainer loop on the autograd engine, with transformers' TrainingArguments.
/// <para>
/// An optimizer step takes gradient_accumulation_steps micro-batches of per_device_train_batch_size rows
/// in the epoch's order. Each micro-batch's mean loss is scaled by its share of the step's target
/// tokens (targets_k / Σ targets) before backward, so the accumulated gradient is the gradient of the
/// mean loss over every target token of the effective batch (transformers ≥ 4.46 with
/// num_items_in_batch); the step's loss is that token mean. Then global-norm clipping (max_grad_norm),
/// the scheduler's learning rate for the step, the optimizer step, and the logging / evaluation /
/// saving that the strategies ask for (in that order). Steps per epoch = ceil(micro-batches / accumulation);
/// max_steps &gt; 0 overrides num_train_epochs.
/// </para>
/// <para>
/// Determinism: the epoch order is a Fisher-Yates shuffle seeded by (data_seed or seed, epoch), so a
/// resumed run needs only the epoch and the step within it; with the optimizer state, the trainable
/// bytes, the RNG state and the logging accumulators restored, a resumed run reproduces the
/// uninterrupted run's losses and final parameters exactly.
/// </para>
/// </summary>
public sealed class SftTrainer
{
    public const string MetricsFileName = "metrics.jsonl", OptimizerFileName = "optimizer.safetensors",
        SchedulerFileName = "scheduler.json", RngFileName = "rng_state.json";

    private readonly ICausalLM _model;
    private readonly TrainingArguments _args;
    private readonly SftDataset _train;
    private readonly SftDataset? _eval;
    private readonly ITrainableState _trainable;
    private readonly IReadOnlyList<ITrainerCallback> _callbacks;
    private readonly Rng _rng;
    private readonly bool _shuffle;

    /// <param name="trainable">What checkpoints save (default: the trainable parameters in trainable.safetensors).</param>
    /// <param name="rng">The training generator (dropout); its state is saved in checkpoints. Default: Rng(seed).</param>
    /// <param name="shuffle">Shuffle the rows every epoch (data.shuffle).</param>
    public SftTrainer(ICausalLM model, TrainingArguments args, SftDataset train, SftDataset? eval = null,
        ITrainableState? trainable = null, IEnumerable<ITrainerCallback>? callbacks = null, Rng? rng = null, bool shuffle = true)
    {
        _model = model;
        _args = args;
        _train = train;
        _eval = eval;
        _trainable = trainable ?? new ParameterTrainableState(model.Parameters);
        _callbacks = callbacks?.ToList() ?? [];
        _rng = rng ?? new Rng((ulong)args.Seed);
        _shuffle = shuffle;
        args.Validate();
        if (train.Count == 0) throw new PeftSharpException("training: the training set is empty.");
        if (args.EvalStrategy != IntervalStrategy.No && eval == null)
            throw new PeftSharpException($"training: eval_strategy \"{TrainingArguments.Name(args.EvalStrategy)}\" needs evaluation data (data.eval_file or data.test_size).");
        if (!model.Parameters.Any(p => p.RequiresGrad)) throw new PeftSharpException("training: the model has no trainable parameters.");
    }

    public int MicroBatchesPerEpoch => (_train.Count + _args.PerDeviceTrainBatchSize - 1) / _args.PerDeviceTrainBatchSize;
    public int StepsPerEpoch => Math.Max(1, (MicroBatchesPerEpoch + _args.GradientAccumulationSteps - 1) / _args.GradientAccumulationSteps);
    public int TotalSteps => _args.MaxSteps > 0 ? _args.MaxSteps : Math.Max(1, (int)Math.Ceiling(_args.NumTrainEpochs * StepsPerEpoch));

    /// <summary>The metric key that picks the best checkpoint (metric_for_best_model, "eval_" added; default eval_loss).</summary>
    public string BestMetricKey => _args.MetricForBestModel is null or "loss" or "eval_loss" ? "eval_loss"
        : _args.MetricForBestModel.StartsWith("eval_", StringComparison.Ordinal) ? _args.MetricForBestModel : "eval_" + _args.MetricForBestModel;

    private bool GreaterIsBetter => _args.GreaterIsBetter ?? BestMetricKey != "eval_loss";

    public TrainResult Train(CancellationToken cancellation = default)
    {
        var args = _args;
        Directory.CreateDirectory(args.OutputDir);
        if (args.GradientCheckpointing && _model is IGradientCheckpointing gc) gc.GradientCheckpointing = true;
        int total = TotalSteps, perEpoch = StepsPerEpoch, accumulation = args.GradientAccumulationSteps;
        var schedule = LrSchedule.From(args, total);
        using var optimizer = Optimizer.Create(args, _model.Parameters);
        var state = new TrainerState
        {
            MaxSteps = total, NumTrainEpochs = Math.Ceiling((double)total / perEpoch), LoggingSteps = args.LoggingSteps,
            EvalSteps = args.EvalSteps ?? args.LoggingSteps, SaveSteps = args.SaveSteps, TrainBatchSize = args.PerDeviceTrainBatchSize,
            DataSeed = args.DataSeed ?? args.Seed, TrainRows = _train.Count,
        };
        string metricsPath = Path.Combine(args.OutputDir, MetricsFileName);
        string? resume = ResolveResume(args);
        if (resume != null)
        {
            state = Restore(resume, optimizer, state);
            AtomicFile.WriteAllText(metricsPath, string.Concat(state.LogHistory.Select(e => e.ToJsonString() + "\n")));
        }
        else if (File.Exists(metricsPath)) File.Delete(metricsPath);

        var control = new TrainerControl();
        var stepLosses = new List<double>();
        using var tape = new Tape();
        var ops = new Ops(tape);
        var clock = Stopwatch.StartNew();
        long tokensThisRun = 0;
        int stepsThisRun = 0;
        bool stoppedEarly = false;
        int epochs = (total + perEpoch - 1) / perEpoch;
        var batches = new List<TokenBatch>(accumulation);

        for (int epoch = state.EpochIndex; epoch < epochs && state.GlobalStep < total && !control.ShouldStop; epoch++)
        {
            var order = _train.EpochOrder(state.DataSeed, epoch, _shuffle);
            int firstStep = epoch == state.EpochIndex ? state.StepInEpoch : 0;
            state.EpochIndex = epoch;
            for (int s = firstStep; s < perEpoch && state.GlobalStep < total; s++)
            {
                cancellation.ThrowIfCancellationRequested();
                batches.Clear();
                for (int k = s * accumulation; k < Math.Min((s + 1) * accumulation, MicroBatchesPerEpoch); k++)
                {
                    int start = k * args.PerDeviceTrainBatchSize, n = Math.Min(args.PerDeviceTrainBatchSize, _train.Count - start);
                    batches.Add(_train.Collate(order.AsSpan(start, n)));
                }
                int step = state.GlobalStep + 1;
                double loss = AccumulateGradients(ops, tape, batches, out long stepTokens);
                if (!double.IsFinite(loss))
                    throw new PeftSharpException($"training: the loss at step {step} is {loss.ToString(CultureInfo.InvariantCulture)}; training stopped " +
                        $"before the optimizer step. Last good checkpoint: {LatestCheckpoint(args.OutputDir) ?? "none"}. Try a lower learning_rate or max_grad_norm.");
                float gradNorm = args.MaxGradNorm > 0 ? GradientNorm.Clip(optimizer.Parameters, (float)args.MaxGradNorm) : GradientNorm.Compute(optimizer.Parameters);
                if (!float.IsFinite(gradNorm))
                    throw new PeftSharpException($"training: the gradient norm at step {step} is {gradNorm.ToString(CultureInfo.InvariantCulture)}; training stopped " +
                        $"before the optimizer step. Last good checkpoint: {LatestCheckpoint(args.OutputDir) ?? "none"}.");
                double lr = schedule.LearningRate(state.GlobalStep);
                optimizer.LearningRate = (float)lr;
                optimizer.Step();
                optimizer.ZeroGrad();

                state.GlobalStep = step;
                state.StepInEpoch = s + 1;
                state.Epoch = epoch + (double)(s + 1) / perEpoch;
                state.NumInputTokensSeen += stepTokens;
                state.LossSinceLog += loss;
                state.StepsSinceLog++;
                state.TotalLoss += loss;
                stepLosses.Add(loss);
                tokensThisRun += stepTokens;
                stepsThisRun++;

                double seconds = Math.Max(1e-9, clock.Elapsed.TotalSeconds);
                double tokensPerSecond = tokensThisRun / seconds;
                var eta = TimeSpan.FromSeconds(seconds / stepsThisRun * (total - step));
                var progress = new TrainingProgress(step, total, state.Epoch, loss, lr, gradNorm, tokensPerSecond, clock.Elapsed, eta);
                foreach (var c in _callbacks) c.OnStep(progress, control);

                bool epochEnd = s + 1 == perEpoch, last = step == total;
                if (Due(args.LoggingStrategy, args.LoggingSteps, step, epochEnd) || (step == 1 && args.LoggingFirstStep))
                {
                    var entry = new JsonObject
                    {
                        ["loss"] = Round(state.LossSinceLog / state.StepsSinceLog),
                        ["grad_norm"] = gradNorm,
                        ["learning_rate"] = lr,
                        ["tokens_per_second"] = Math.Round(tokensPerSecond, 2),
                        ["num_tokens"] = state.NumInputTokensSeen,
                        ["epoch"] = Math.Round(state.Epoch, 4),
                        ["step"] = step,
                    };
                    state.LossSinceLog = 0;
                    state.StepsSinceLog = 0;
                    Log(state, entry, metricsPath);
                }
                if (_eval != null && Due(args.EvalStrategy, args.EvalSteps ?? args.LoggingSteps, step, epochEnd))
                    stoppedEarly |= EvaluateAndTrack(state, tape, metricsPath, control);
                if (Due(args.SaveStrategy, args.SaveSteps, step, epochEnd) || (last && args.SaveStrategy != IntervalStrategy.No) || control.ShouldSave)
                {
                    SaveCheckpoint(state, optimizer, schedule);
                    control.ShouldSave = false;
                }
                if (control.ShouldStop) break;
            }
        }

        if (args.LoadBestModelAtEnd && state.BestModelCheckpoint != null && Directory.Exists(state.BestModelCheckpoint))
            _trainable.Load(state.BestModelCheckpoint);
        var summary = new JsonObject
        {
            ["train_loss"] = state.GlobalStep == 0 ? 0 : state.TotalLoss / state.GlobalStep,
            ["train_runtime"] = Math.Round(clock.Elapsed.TotalSeconds, 4),
            ["train_tokens_per_second"] = Math.Round(tokensThisRun / Math.Max(1e-9, clock.Elapsed.TotalSeconds), 2),
            ["epoch"] = Math.Round(state.Epoch, 4),
            ["step"] = state.GlobalStep,
        };
        Log(state, summary, metricsPath);
        state.Write(Path.Combine(args.OutputDir, TrainerState.FileName));
        return new TrainResult(state.GlobalStep, state.GlobalStep == 0 ? 0 : state.TotalLoss / state.GlobalStep, stepLosses,
            state.BestModelCheckpoint, stoppedEarly, state) { ResumedFrom = resume };
    }

    /// <summary>Loss, perplexity and mean token accuracy on the evaluation set (no gradients).</summary>
    public LossMetrics Evaluate() => LossEvaluation.Evaluate(_model, _eval ?? throw new PeftSharpException("training: no evaluation data."), _args.PerDeviceEvalBatchSize);

    private double AccumulateGradients(Ops ops, Tape tape, List<TokenBatch> batches, out long tokens)
    {
        long targets = 0;
        tokens = 0;
        foreach (var b in batches)
        {
            targets += SftDataset.TargetCount(b);
            if (b.AttentionMask != null) foreach (int m in b.AttentionMask) tokens += m;
            else tokens += b.InputIds.Length;
        }
        double lossSum = 0;
        if (targets == 0) return 0;
        foreach (var b in batches)
        {
            int count = SftDataset.TargetCount(b);
            if (count == 0) continue;
            var loss = _model.Loss(ops, b);
            unsafe { lossSum += (double)*loss.Data * count; }
            tape.Backward(ops.Scale(loss, (float)((double)count / targets)));
            tape.Reset();
        }
        return lossSum / targets;
    }

    private static bool Due(IntervalStrategy strategy, int every, int step, bool epochEnd) => strategy switch
    {
        IntervalStrategy.Steps => every > 0 && step % every == 0,
        IntervalStrategy.Epoch => epochEnd,
        _ => false,
    };

    private static double Round(double x) => Math.Round(x, 6);

    private void Log(TrainerState state, JsonObject entry, string metricsPath)
    {
        state.LogHistory.Add(entry);
        File.AppendAllText(metricsPath, entry.ToJsonString() + "\n");
        foreach (var c in _callbacks) c.OnLog(entry);
    }

    /// <summary>Evaluates, logs, updates the best metric and early stopping; returns true when early stopping fires.</summary>
    private bool EvaluateAndTrack(TrainerState state, Tape tape, string metricsPath, TrainerControl control)
    {
        var m = LossEvaluation.Evaluate(_model, _eval!, _args.PerDeviceEvalBatchSize, tape);
        var metrics = new Dictionary<string, double>
        {
            ["eval_loss"] = m.Loss,
            ["eval_perplexity"] = m.Perplexity,
            ["eval_mean_token_accuracy"] = m.MeanTokenAccuracy,
        };
        var entry = new JsonObject();
        foreach (var (k, v) in metrics) entry[k] = v;
        entry["epoch"] = Math.Round(state.Epoch, 4);
        entry["step"] = state.GlobalStep;
        Log(state, entry, metricsPath);
        foreach (var c in _callbacks) c.OnEvaluate(metrics, control);

        if (!metrics.TryGetValue(BestMetricKey, out double value))
            throw new PeftSharpException($"training.metric_for_best_model: no metric '{BestMetricKey}'; available: {string.Join(", ", metrics.Keys)}.");
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

    private void SaveCheckpoint(TrainerState state, IOptimizer optimizer, LrSchedule schedule)
    {
        string final = Path.Combine(_args.OutputDir, $"checkpoint-{state.GlobalStep}");
        string temp = Path.Combine(_args.OutputDir, $".checkpoint-{state.GlobalStep}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        if (state.BestGlobalStep == state.GlobalStep) state.BestModelCheckpoint = final;
        try
        {
            _trainable.Save(temp);
            optimizer.SaveState(Path.Combine(temp, OptimizerFileName));
            AtomicFile.WriteAllText(Path.Combine(temp, SchedulerFileName), new JsonObject
            {
                ["lr_scheduler_type"] = schedule.Type,
                ["base_lr"] = schedule.BaseLearningRate,
                ["warmup_steps"] = schedule.WarmupSteps,
                ["total_steps"] = schedule.TotalSteps,
                ["last_epoch"] = state.GlobalStep,
                ["last_lr"] = schedule.LearningRate(state.GlobalStep),
            }.ToJsonString() + "\n");
            var rng = _rng.State;
            AtomicFile.WriteAllText(Path.Combine(temp, RngFileName), new JsonObject
            {
                ["xoshiro256"] = new JsonArray(rng.S0.ToString(CultureInfo.InvariantCulture), rng.S1.ToString(CultureInfo.InvariantCulture),
                    rng.S2.ToString(CultureInfo.InvariantCulture), rng.S3.ToString(CultureInfo.InvariantCulture)),
            }.ToJsonString() + "\n");
            state.Write(Path.Combine(temp, TrainerState.FileName));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(temp, final);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
        foreach (var c in _callbacks) c.OnSave(final);
        RotateCheckpoints(state);
    }

    /// <summary>save_total_limit as transformers applies it: the oldest go first, the best checkpoint is never deleted.</summary>
    private void RotateCheckpoints(TrainerState state)
    {
        if (_args.SaveTotalLimit is not int limit) return;
        var sorted = Checkpoints(_args.OutputDir);
        string? best = state.BestModelCheckpoint == null ? null : Path.GetFullPath(state.BestModelCheckpoint);
        int bestIndex = best == null ? -1 : sorted.FindIndex(c => Path.GetFullPath(c.Path) == best);
        if (bestIndex >= 0 && sorted.Count >= 2)
        {
            var b = sorted[bestIndex];
            sorted.RemoveAt(bestIndex);
            sorted.Insert(sorted.Count - 1, b);
            if (limit == 1 && bestIndex != sorted.Count - 1) limit = 2;
        }
        for (int i = 0; i < sorted.Count - limit; i++)
            if (best == null || Path.GetFullPath(sorted[i].Path) != best) Directory.Delete(sorted[i].Path, recursive: true);
    }

    /// <summary>checkpoint-N folders of <paramref name="outputDir"/>, by N.</summary>
    public static List<(int Step, string Path)> Checkpoints(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return [];
        return Directory.GetDirectories(outputDir, "checkpoint-*")
            .Select(d => (Ok: int.TryParse(Path.GetFileName(d)["checkpoint-".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int n), Step: n, Path: d))
            .Where(x => x.Ok && File.Exists(Path.Combine(x.Path, TrainerState.FileName)))
            .OrderBy(x => x.Step).Select(x => (x.Step, x.Path)).ToList();
    }

    public static string? LatestCheckpoint(string outputDir) => Checkpoints(outputDir) is { Count: > 0 } list ? list[^1].Path : null;

    private static string? ResolveResume(TrainingArguments args)
    {
        string? r = args.ResumeFromCheckpoint;
        if (string.IsNullOrEmpty(r) || r.Equals("false", StringComparison.OrdinalIgnoreCase)) return null;
        if (r.Equals("true", StringComparison.OrdinalIgnoreCase))
            return LatestCheckpoint(args.OutputDir)
                ?? throw new PeftSharpException($"training.resume_from_checkpoint: no checkpoint-N folder in {args.OutputDir}.");
        if (!Directory.Exists(r)) throw new PeftSharpException($"training.resume_from_checkpoint: folder not found: {r}");
        return r;
    }

    private TrainerState Restore(string dir, IOptimizer optimizer, TrainerState fresh)
    {
        var state = TrainerState.Read(Path.Combine(dir, TrainerState.FileName));
        if (state.TrainRows != fresh.TrainRows)
            throw new PeftSharpException($"training.resume_from_checkpoint: {dir} was trained on {state.TrainRows} rows, this run has {fresh.TrainRows}; " +
                "resume with the same data and data settings (max_length, packing), or start a new run.");
        if (state.TrainBatchSize != fresh.TrainBatchSize)
            throw new PeftSharpException($"training.resume_from_checkpoint: {dir} used per_device_train_batch_size {state.TrainBatchSize}, this run {fresh.TrainBatchSize}; the data position would not match.");
        _trainable.Load(dir);
        optimizer.LoadState(Path.Combine(dir, OptimizerFileName));
        string rngPath = Path.Combine(dir, RngFileName);
        if (File.Exists(rngPath) && JsonNode.Parse(File.ReadAllText(rngPath))?["xoshiro256"] is JsonArray a && a.Count == 4)
        {
            ulong U(int i) => ulong.Parse((string)a[i]!, CultureInfo.InvariantCulture);
            _rng.State = new RngState(U(0), U(1), U(2), U(3));
        }
        state.MaxSteps = fresh.MaxSteps;
        state.NumTrainEpochs = fresh.NumTrainEpochs;
        return state;
    }
}
