using System.Globalization;
using System.Text.Json.Nodes;
using PeftSharp.Formats;
using PeftSharp.Training.Optimizers;

namespace PeftSharp.Training;

/// <summary>
/// checkpoint-N folders as transformers lays them out: each is written whole into a temporary sibling and renamed
/// into place, rotation renames a folder away before deleting it, and temporaries left by a killed run are removed
/// at the next start, so every checkpoint-N folder present is complete.
/// </summary>
public static class Checkpointing
{
    public const string MetricsFileName = "metrics.jsonl", OptimizerFileName = "optimizer.safetensors",
        SchedulerFileName = "scheduler.json", RngFileName = "rng_state.json";

    private const string TempPrefix = ".checkpoint-", DeletingPrefix = ".deleting-";

    /// <summary>Writes checkpoint-{global_step} (trainable state, optimizer, scheduler, trainer_state.json), then applies save_total_limit.</summary>
    public static string Save(TrainingArguments args, TrainerState state, ITrainableState trainable, IOptimizer optimizer, LrSchedule schedule,
        IReadOnlyList<ITrainerCallback> callbacks)
    {
        string final = Path.Combine(args.OutputDir, $"checkpoint-{state.GlobalStep}");
        string temp = Path.Combine(args.OutputDir, $"{TempPrefix}{state.GlobalStep}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        if (state.BestGlobalStep == state.GlobalStep) state.BestModelCheckpoint = final;
        try
        {
            trainable.Save(temp);
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
            // Nothing random is saved: every stream is keyed by (seed, step, micro-batch) (see Trainer). The file says so
            // for readers who look for transformers' rng_state.pth.
            AtomicFile.WriteAllText(Path.Combine(temp, RngFileName), new JsonObject
            {
                ["scheme"] = "fold-in",
                ["seed"] = args.Seed,
                ["data_seed"] = state.DataSeed,
                ["note"] = "dropout, NEFTune and data order are keyed by (seed, step, micro-batch); nothing else to restore",
            }.ToJsonString() + "\n");
            state.Write(Path.Combine(temp, TrainerState.FileName));
            if (Directory.Exists(final)) RemoveFolder(final);
            Directory.Move(temp, final);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
        foreach (var c in callbacks) c.OnSave(final);
        Rotate(args, state);
        return final;
    }

    /// <summary>save_total_limit as transformers applies it: the oldest go first, the best checkpoint is never deleted.</summary>
    private static void Rotate(TrainingArguments args, TrainerState state)
    {
        if (args.SaveTotalLimit is not int limit) return;
        var sorted = List(args.OutputDir);
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
            if (best == null || Path.GetFullPath(sorted[i].Path) != best) RemoveFolder(sorted[i].Path);
    }

    /// <summary>Renames a folder out of the checkpoint namespace, then deletes it: a kill in between leaves no half-deleted checkpoint-N.</summary>
    private static void RemoveFolder(string path)
    {
        string parent = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string doomed = Path.Combine(parent, $"{DeletingPrefix}{Path.GetFileName(path)}.{Guid.NewGuid():N}");
        Directory.Move(path, doomed);
        Directory.Delete(doomed, recursive: true);
    }

    /// <summary>Temporary checkpoint folders, folders being deleted and temporary files left in <paramref name="outputDir"/> by a killed run.</summary>
    public static int RemoveStaleTemporaries(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return 0;
        int removed = 0;
        foreach (var dir in Directory.GetDirectories(outputDir))
        {
            string name = Path.GetFileName(dir);
            if ((name.StartsWith(TempPrefix, StringComparison.Ordinal) && name.EndsWith(".tmp", StringComparison.Ordinal))
                || name.StartsWith(DeletingPrefix, StringComparison.Ordinal))
            {
                Directory.Delete(dir, recursive: true);
                removed++;
            }
        }
        foreach (var file in Directory.GetFiles(outputDir, ".*.tmp"))
        {
            File.Delete(file);
            removed++;
        }
        return removed;
    }

    /// <summary>checkpoint-N folders of <paramref name="outputDir"/> that hold a trainer_state.json, by N.</summary>
    public static List<(int Step, string Path)> List(string outputDir)
    {
        if (!Directory.Exists(outputDir)) return [];
        return Directory.GetDirectories(outputDir, "checkpoint-*")
            .Select(d => (Ok: int.TryParse(Path.GetFileName(d)["checkpoint-".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int n), Step: n, Path: d))
            .Where(x => x.Ok && File.Exists(Path.Combine(x.Path, TrainerState.FileName)))
            .OrderBy(x => x.Step).Select(x => (x.Step, x.Path)).ToList();
    }

    public static string? Latest(string outputDir) => List(outputDir) is { Count: > 0 } list ? list[^1].Path : null;

    /// <summary>resume_from_checkpoint: a folder, "true" for the latest checkpoint in output_dir, or null.</summary>
    public static string? ResolveResume(TrainingArguments args)
    {
        string? r = args.ResumeFromCheckpoint;
        if (string.IsNullOrEmpty(r) || r.Equals("false", StringComparison.OrdinalIgnoreCase)) return null;
        if (r.Equals("true", StringComparison.OrdinalIgnoreCase))
            return Latest(args.OutputDir)
                ?? throw new PeftSharpException($"training.resume_from_checkpoint: no checkpoint-N folder in {args.OutputDir}.");
        if (!Directory.Exists(r)) throw new PeftSharpException($"training.resume_from_checkpoint: folder not found: {r}");
        return r;
    }

    /// <summary>Reads a checkpoint's state into this run (trainable bytes, optimizer), checking that its data position means the same here.</summary>
    public static TrainerState Restore(string dir, TrainerState fresh, ITrainableState trainable, IOptimizer optimizer, int stepsPerEpoch)
    {
        var state = TrainerState.Read(Path.Combine(dir, TrainerState.FileName));
        if (state.TrainRows != fresh.TrainRows)
            throw new PeftSharpException($"training.resume_from_checkpoint: {dir} was trained on {state.TrainRows} rows, this run has {fresh.TrainRows}; " +
                "resume with the same data and data settings (max_length, packing), or start a new run.");
        // The position is counted in optimizer steps: it means the same rows whenever the global batch (rows per step) is the
        // same, whatever the split into per-device batches, accumulation and processes.
        if (state.GlobalBatchMicroBatches > 0
                ? (long)state.TrainBatchSize * state.GlobalBatchMicroBatches != (long)fresh.TrainBatchSize * fresh.GlobalBatchMicroBatches
                : state.TrainBatchSize != fresh.TrainBatchSize)
            throw new PeftSharpException($"training.resume_from_checkpoint: {dir} took {state.TrainBatchSize} rows × {Math.Max(1, state.GlobalBatchMicroBatches)} " +
                $"micro-batches per step (per_device_train_batch_size × gradient_accumulation_steps × processes), this run {fresh.TrainBatchSize} × " +
                $"{fresh.GlobalBatchMicroBatches}; resume with the same global batch, or the data position would not match.");
        if (state.DataSeed != fresh.DataSeed)
            throw new PeftSharpException($"training.resume_from_checkpoint: {dir} shuffled with data_seed {state.DataSeed}, this run with {fresh.DataSeed}; the data position would not match.");
        if (state.GlobalStep > fresh.MaxSteps)
            throw new PeftSharpException($"training.resume_from_checkpoint: {dir} is at step {state.GlobalStep}, past this run's {fresh.MaxSteps} steps.");
        if (state.StepInEpoch > stepsPerEpoch || (long)state.EpochIndex * stepsPerEpoch + state.StepInEpoch != state.GlobalStep)
            throw new PeftSharpException($"{Path.Combine(dir, TrainerState.FileName)}: epoch_index {state.EpochIndex} and step_in_epoch {state.StepInEpoch} " +
                $"do not give global_step {state.GlobalStep} at {stepsPerEpoch} steps per epoch; the checkpoint is inconsistent or from another run.");
        trainable.Load(dir);
        optimizer.LoadState(Path.Combine(dir, OptimizerFileName));
        if (optimizer.StepCount != state.GlobalStep)
            throw new PeftSharpException($"{dir}: the optimizer state has taken {optimizer.StepCount} steps but trainer_state.json says global_step {state.GlobalStep}; the checkpoint is inconsistent.");
        state.MaxSteps = fresh.MaxSteps;
        state.NumTrainEpochs = fresh.NumTrainEpochs;
        state.LoggingSteps = fresh.LoggingSteps;
        state.EvalSteps = fresh.EvalSteps;
        state.SaveSteps = fresh.SaveSteps;
        state.GlobalBatchMicroBatches = fresh.GlobalBatchMicroBatches;
        return state;
    }
}

/// <summary>
/// The output folder's lock for the length of a run: <c>.peftsharp.lock</c> opened exclusively (an advisory lock the
/// system drops when the process dies, even by kill -9) and <c>.peftsharp.lock.owner</c> naming the owner's process id.
/// A second run on the same folder fails at once naming the first; the files of a dead run are taken over.
/// </summary>
public sealed class OutputLock : IDisposable
{
    public const string FileName = ".peftsharp.lock";
    private const string OwnerSuffix = ".owner";
    private readonly FileStream _stream;
    private readonly string _path;

    private OutputLock(FileStream stream, string path, string? previousOwner)
    {
        _stream = stream;
        _path = path;
        PreviousOwner = previousOwner;
    }

    /// <summary>The process id a stale lock named (a run that died), or null.</summary>
    public string? PreviousOwner { get; }

    public static OutputLock Acquire(string outputDir)
    {
        string path = Path.Combine(outputDir, FileName), ownerPath = path + OwnerSuffix;
        string? Owner()
        {
            try { return File.Exists(ownerPath) ? File.ReadAllText(ownerPath).Trim() : null; }
            catch (IOException) { return null; }
            catch (UnauthorizedAccessException) { return null; }
        }
        FileStream stream;
        try { stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException)
        {
            string owner = Owner() is { Length: > 0 } pid ? "process " + pid : "another process";
            throw new PeftSharpException($"training.output_dir: {outputDir} is in use by {owner} (lock {path}); wait for that run to end or choose another output_dir.");
        }
        string? previous = Owner();
        AtomicFile.WriteAllText(ownerPath, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        return new OutputLock(stream, path, string.IsNullOrEmpty(previous) ? null : previous);
    }

    public void Dispose()
    {
        try
        {
            File.Delete(_path + OwnerSuffix);
            File.Delete(_path);
        }
        catch (IOException) { }
        _stream.Dispose();
    }
}
