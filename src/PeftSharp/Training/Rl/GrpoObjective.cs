using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Tensors;
using PeftSharp.Training.Preference;

namespace PeftSharp.Training.Rl;

/// <summary>A prompt of the GRPO data: its text (a conversation already rendered with the generation prompt) and its row's fields.</summary>
public sealed record GrpoPrompt(string Text, JsonObject Row);

/// <summary>Wall time spent in each part of GRPO's steps so far, in seconds (bench and progress reporting).</summary>
public sealed class GrpoTimings
{
    public double Generation { get; set; }
    public double Reward { get; set; }
    public double Reference { get; set; }
    /// <summary>The policy's forward, the loss and the backward.</summary>
    public double Training { get; set; }
    public long GeneratedTokens { get; set; }
}

/// <summary>One micro-batch of rollouts: every prompt's num_generations completions in one model batch, scored, with their advantages.</summary>
public sealed class GrpoBatch
{
    /// <summary>Each completion's prompt + completion ids (the rows of <see cref="Sequences"/>).</summary>
    public required TokenizedSequence[] Completions { get; init; }
    public required SequenceBatch Sequences { get; init; }
    public required int[] PromptLengths { get; init; }
    public required bool[][] Mask { get; init; }
    public required double[] Advantages { get; init; }
    public required Dictionary<string, double> Metrics { get; init; }
    /// <summary>
    /// π_old: the per-token log-probs of the weights that sampled the completions, computed at generation time when the rollout
    /// is trained on after the weights have moved (TRL's old_per_token_logps); null when the ratio is 1 (the current ones detached).
    /// </summary>
    public double[][]? OldLogps { get; set; }
    /// <summary>The reference's per-token log-probs once computed (the reference is frozen, so passes over a buffered rollout reuse them).</summary>
    internal double[][]? ReferenceLogps { get; set; }
    public long MaskedTokens => Mask.Sum(m => (long)m.Count(x => x));

    /// <summary>The completions at <paramref name="indices"/> as a batch of their own (a slice of a generation batch).</summary>
    public GrpoBatch Select(IReadOnlyList<int> indices, int padId) => new()
    {
        Completions = [.. indices.Select(i => Completions[i])],
        Sequences = SequenceBatch.Build([.. indices.Select(i => Completions[i])], padId),
        PromptLengths = [.. indices.Select(i => PromptLengths[i])],
        Mask = [.. indices.Select(i => Mask[i])],
        Advantages = [.. indices.Select(i => Advantages[i])],
        OldLogps = OldLogps == null ? null : [.. indices.Select(i => OldLogps[i])],
        Metrics = Metrics,
    };
}

/// <summary>
/// TRL's GRPOTrainer as an objective. A micro-batch takes per_device_train_batch_size prompts; its <see cref="Collate"/> samples
/// num_generations completions of each with the current weights (one batched KV-cache generation, a sampling seed keyed by
/// (seed, step, micro-batch) through <see cref="IRolloutObjective"/>, so runs and resumes repeat), scores them with the reward
/// functions and computes group-relative advantages. <see cref="Accumulate"/> runs the reference forward (β ≠ 0: the policy with
/// its adapters off) and the policy forward, and backpropagates <see cref="GrpoLoss.Compute"/> through the per-token log-probs.
/// <para>
/// TRL's generation buffer: a generation samples for steps_per_generation micro-batches' prompts at once (default
/// gradient_accumulation_steps), scores them together (advantages over the whole generation batch), shuffles the completions
/// and splits them into steps_per_generation slices, which the next steps_per_generation × num_iterations micro-batches train on
/// in turn. When a cycle does not end with an optimizer step (gradient_accumulation_steps is no multiple of
/// steps_per_generation × num_iterations), rollouts are trained on after the weights moved, so the per-token log-probs of the
/// sampling weights are computed at generation time (dropout off, as generation) and the ratio π/π_old is clipped to
/// [1 − epsilon, 1 + epsilon_high]; otherwise the old log-probs are the current ones detached and the ratio is exactly 1.
/// The buffer is saved in checkpoints (<see cref="ICheckpointedObjective"/>), so a resume in the middle of a cycle trains on
/// the rollouts the uninterrupted run trained on.
/// </para>
/// </summary>
public sealed class GrpoObjective : ITrainingObjective<GrpoBatch>, IRolloutObjective, ICheckpointedObjective
{
    /// <summary>The checkpoint file of the buffered rollouts.</summary>
    public const string RolloutsFileName = "grpo_rollouts.bin";
    private readonly ICausalLM _model;
    private readonly Tokenizer _tokenizer;
    private readonly GrpoOptions _options;
    private readonly IReadOnlyList<GrpoPrompt> _prompts;
    private readonly IReadOnlyList<IRewardFunction> _rewards;
    private readonly IReferenceModel? _reference;
    private readonly int[] _eos;
    private readonly int _pad;
    private readonly string? _completionsLog;
    private readonly int _gradientAccumulation;
    private ulong _key;
    private int _step;
    private int _cyclePosition;
    private (int[] Rows, GrpoBatch[] Slices)? _buffer;

    /// <param name="gradientAccumulationSteps">the run's; the default steps_per_generation, and whether rollouts outlive their step.</param>
    public GrpoObjective(ICausalLM model, Tokenizer tokenizer, GrpoOptions options, IReadOnlyList<GrpoPrompt> prompts,
        IReadOnlyList<IRewardFunction> rewards, IReferenceModel? reference, int[] eosTokenIds, string? completionsLog = null,
        int gradientAccumulationSteps = 1)
    {
        options.Validate();
        if (rewards.Count == 0) throw new PeftSharpException("grpo.reward_funcs: GRPO needs at least one reward function.");
        if (options.RewardWeights != null && options.RewardWeights.Count != rewards.Count)
            throw new PeftSharpException($"grpo.reward_weights has {options.RewardWeights.Count} weight(s) for {rewards.Count} reward function(s).");
        if (options.Beta != 0 && reference == null)
            throw new PeftSharpException("grpo.beta: the reference is the policy with its adapter off, so beta ≠ 0 needs a lora section (or beta: 0).");
        _model = model;
        _tokenizer = tokenizer;
        _options = options;
        _prompts = prompts;
        _rewards = rewards;
        _reference = reference;
        _eos = eosTokenIds;
        _pad = tokenizer.PadTokenId ?? (eosTokenIds.Length > 0 ? eosTokenIds[0] : 0);
        _completionsLog = completionsLog;
        _gradientAccumulation = gradientAccumulationSteps;
    }

    public int StepsPerGeneration => _options.StepsPerGeneration ?? _gradientAccumulation;
    public int NumIterations => _options.NumIterations;

    /// <summary>TRL's condition: a cycle that does not end with an optimizer step trains on rollouts of older weights.</summary>
    public bool UsesOldLogProbs => _gradientAccumulation % (StepsPerGeneration * NumIterations) != 0;

    public int RowCount => _prompts.Count;

    /// <summary>Cumulative wall time of generation, rewards, reference forward and training.</summary>
    public GrpoTimings Timings { get; } = new();

    public void BeforeCollate(int step, int microBatch, ulong key, int cyclePosition = 0)
    {
        _step = step;
        _key = Rng.FoldIn(key, 0x6E6F6C6C); // a stream of its own, apart from the dropout streams keyed the same way
        _cyclePosition = cyclePosition;
    }

    /// <summary>
    /// At a cycle's start, generates for all of <paramref name="rows"/> (the generation batch) and returns its first slice;
    /// later in the cycle returns slice (position mod steps_per_generation) of the buffer.
    /// </summary>
    public GrpoBatch Collate(ReadOnlySpan<int> rows)
    {
        if (_cyclePosition == 0) _buffer = (rows.ToArray(), Split(Generate(rows)));
        else if (_buffer is not { } b || !b.Rows.AsSpan().SequenceEqual(rows))
            throw new PeftSharpException($"grpo: step {_step} continues a generation cycle (micro-batch {_cyclePosition} of {StepsPerGeneration * NumIterations}) " +
                $"but no rollouts of it are buffered; a checkpoint resumed mid-cycle needs its {RolloutsFileName}.");
        return _buffer.Value.Slices[_cyclePosition % StepsPerGeneration];
    }

    /// <summary>A generation batch shuffled (a permutation keyed by the generation's key) and split into steps_per_generation slices, with π_old when needed.</summary>
    private GrpoBatch[] Split(GrpoBatch all)
    {
        int spg = StepsPerGeneration, n = all.Advantages.Length;
        GrpoBatch[] slices;
        if (spg == 1) slices = [all];
        else
        {
            if (n < spg) throw new PeftSharpException($"grpo: a generation batch of {n} completions cannot fill steps_per_generation {spg} micro-batches.");
            var order = Enumerable.Range(0, n).ToArray();
            Data.SftDataset.Shuffle(order, new Rng(Rng.FoldIn(_key, 0x73687566)));   // TRL's shuffle_sequence_dict
            slices = [.. Enumerable.Range(0, spg).Select(i => all.Select(order[(int)((long)n * i / spg)..(int)((long)n * (i + 1) / spg)], _pad))];
        }
        if (UsesOldLogProbs)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            using var tape = new Tape();
            var ops = new Ops(tape);
            tape.GradEnabled = false;
            tape.Training = false;
            foreach (var slice in slices)
            {
                slice.OldLogps = PerToken(CompletionLogProbs(ops, slice.Sequences), slice);
                tape.Reset();
            }
            Timings.Reference += System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        return slices;
    }

    private GrpoBatch Generate(ReadOnlySpan<int> rows)
    {
        var (prompts, rowIndex, generated) = Sample(_prompts, rows, _key);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var batch = Score(prompts, rowIndex, generated);
        Timings.Reward += System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
        return batch;
    }

    /// <summary>num_generations sampled completions of each of <paramref name="rows"/> of <paramref name="source"/>, in one batched generation.</summary>
    private (List<int[]> Prompts, List<int> RowIndex, IReadOnlyList<GeneratedSequence> Generated) Sample(IReadOnlyList<GrpoPrompt> source, ReadOnlySpan<int> rows, ulong key)
    {
        int g = _options.NumGenerations;
        var prompts = new List<int[]>();
        var rowIndex = new List<int>();
        foreach (int r in rows)
        {
            var ids = _tokenizer.Encode(source[r].Text, addSpecialTokens: false);
            if (_options.MaxPromptLength is int p && ids.Length > p) ids = ids[^p..];
            if (ids.Length == 0) throw new PeftSharpException($"grpo: prompt {r} encodes to no tokens.");
            for (int k = 0; k < g; k++) { prompts.Add(ids); rowIndex.Add(r); }
        }
        var generation = new GenerationOptions
        {
            DoSample = true, Temperature = _options.Temperature, TopP = _options.TopP, TopK = _options.TopK,
            MaxNewTokens = _options.MaxCompletionLength, Seed = key, EosTokenIds = _eos, PadTokenId = _pad,
        };
        IReadOnlyList<GeneratedSequence> generated;
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        using (var session = _model.StartDecoding(prompts.Count, prompts.Max(p => p.Length) + _options.MaxCompletionLength))
            generated = Generator.Generate(session, prompts, generation);
        Timings.Generation += System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
        Timings.GeneratedTokens += generated.Sum(g => (long)g.Tokens.Length);
        return (prompts, rowIndex, generated);
    }

    /// <summary>Each completion's text and each reward function's score of it, with the rewards' mean and std metrics.</summary>
    private (string[] Texts, double[][] PerFunction, Dictionary<string, double> Metrics) Rewarded(IReadOnlyList<GrpoPrompt> source, IReadOnlyList<int> rowIndex,
        IReadOnlyList<GeneratedSequence> generated)
    {
        int n = generated.Count;
        var inputs = new RewardInput[n];
        var texts = new string[n];
        for (int i = 0; i < n; i++)
        {
            texts[i] = _tokenizer.Decode(generated[i].Tokens, skipSpecialTokens: true);
            var row = source[rowIndex[i]];
            inputs[i] = new RewardInput(row.Text, texts[i], generated[i].Tokens.Length, row.Row);
        }
        var perFunction = new double[n][];
        for (int i = 0; i < n; i++) perFunction[i] = new double[_rewards.Count];
        var metrics = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int f = 0; f < _rewards.Count; f++)
        {
            var scores = _rewards[f].Score(inputs);
            if (scores.Length != n) throw new PeftSharpException($"reward {_rewards[f].Name}: {scores.Length} scores for {n} completions.");
            for (int i = 0; i < n; i++) perFunction[i][f] = scores[i];
            var valid = scores.Where(s => !double.IsNaN(s)).ToArray();
            metrics[$"rewards/{_rewards[f].Name}/mean"] = valid.Length > 0 ? valid.Average() : 0;
            metrics[$"rewards/{_rewards[f].Name}/std"] = valid.Length > 1 ? GrpoLoss.MeanStd(valid).Std : 0;
        }
        return (texts, perFunction, metrics);
    }

    /// <summary>Rewards, advantages, masks and the generation metrics of sampled completions (public for tests).</summary>
    public GrpoBatch Score(IReadOnlyList<int[]> prompts, IReadOnlyList<int> rowIndex, IReadOnlyList<GeneratedSequence> generated)
    {
        int n = generated.Count;
        var (texts, perFunction, metrics) = Rewarded(_prompts, rowIndex, generated);
        var (rewards, advantages, groupStd) = GrpoLoss.Advantages(perFunction, _options.RewardWeights, _options.NumGenerations, _options.ScaleRewards);
        var mask = new bool[n][];
        var sequences = new TokenizedSequence[n];
        var promptLengths = new int[n];
        int truncated = 0;
        double terminatedLength = 0;
        for (int i = 0; i < n; i++)
        {
            bool isTruncated = generated[i].Reason == FinishReason.Length;
            if (isTruncated) truncated++; else terminatedLength += generated[i].Tokens.Length;
            mask[i] = new bool[generated[i].Tokens.Length];
            if (!(isTruncated && _options.MaskTruncatedCompletions)) Array.Fill(mask[i], true);
            sequences[i] = new TokenizedSequence([.. prompts[i], .. generated[i].Tokens], prompts[i].Length);
            promptLengths[i] = prompts[i].Length;
        }
        metrics["reward"] = rewards.Average();
        metrics["reward_std"] = groupStd.Average();
        metrics["frac_reward_zero_std"] = groupStd.Count(s => Math.Abs(s) <= 1e-8) / (double)n;   // torch.isclose(std, 0)
        metrics["completions/mean_length"] = generated.Average(s => s.Tokens.Length);
        metrics["completions/clipped_ratio"] = truncated / (double)n;
        metrics["completions/mean_terminated_length"] = truncated == n ? 0 : terminatedLength / (n - truncated);
        if (_completionsLog != null) WriteLog(rowIndex, texts, rewards, perFunction, advantages);
        return new GrpoBatch
        {
            Completions = sequences, Sequences = SequenceBatch.Build(sequences, _pad), PromptLengths = promptLengths, Mask = mask, Advantages = advantages, Metrics = metrics,
        };
    }

    private void WriteLog(IReadOnlyList<int> rowIndex, string[] texts, double[] rewards, double[][] perFunction, double[] advantages)
    {
        using var w = File.AppendText(_completionsLog!);
        for (int i = 0; i < texts.Length; i++)
        {
            var line = new JsonObject
            {
                ["step"] = _step, ["prompt"] = _prompts[rowIndex[i]].Text, ["completion"] = texts[i], ["reward"] = rewards[i], ["advantage"] = advantages[i],
            };
            for (int f = 0; f < _rewards.Count; f++) line[_rewards[f].Name] = double.IsNaN(perFunction[i][f]) ? null : perFunction[i][f];
            w.WriteLine(line.ToJsonString());
        }
    }

    /// <summary>grpo, dr_grpo, bnpo: completions; dapo: the completion tokens of the mask (its loss is a token mean over the whole step).</summary>
    public long TargetCount(GrpoBatch batch) => _options.LossType == "dapo" ? batch.MaskedTokens : batch.Advantages.Length;
    public long TokenCount(GrpoBatch batch) => batch.Sequences.TokenCount;

    public unsafe MicroBatchResult Accumulate(Tape tape, GrpoBatch batch, double scale)
    {
        var ops = new Ops(tape);
        try
        {
            var seq = batch.Sequences;
            double[][]? reference = null;
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            if (_options.Beta != 0 && batch.ReferenceLogps != null) reference = batch.ReferenceLogps;
            else if (_options.Beta != 0)
            {
                using var scope = _reference!.Enter();
                bool grad = tape.GradEnabled, training = tape.Training;
                tape.GradEnabled = false;
                tape.Training = false;
                var mark = tape.Arena.Mark();
                try { reference = PerToken(CompletionLogProbs(ops, seq), batch); }
                finally { tape.Arena.Release(mark); tape.GradEnabled = grad; tape.Training = training; }
                batch.ReferenceLogps = reference;
                Timings.Reference += System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
                start = System.Diagnostics.Stopwatch.GetTimestamp();
            }
            var logps = CompletionLogProbs(ops, seq);
            var current = PerToken(logps, batch);
            var (loss, gradient, metrics) = GrpoLoss.Compute(_options, current, batch.OldLogps, reference, batch.Advantages, batch.Mask);
            var flat = new double[logps.Length];
            int at = 0;
            foreach (var row in gradient)
                foreach (double g in row) flat[at++] = g;
            tape.Backward(ops.Scale(ops.ScalarFunction(logps, loss, flat), (float)scale));
            Timings.Training += System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
            foreach (var (k, v) in batch.Metrics) metrics[k] = v;
            return new MicroBatchResult(loss, metrics);
        }
        finally { tape.Reset(); }
    }

    /// <summary>The buffered generation batch (its rows, and each slice's completions, masks, advantages, π_old and metrics), exactly.</summary>
    public void SaveState(string directory)
    {
        if (_buffer is not { } buffer) return;
        Formats.AtomicFile.Write(Path.Combine(directory, RolloutsFileName), stream =>
        {
            using var w = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
            w.Write(RolloutsMagic);
            WriteInts(w, buffer.Rows);
            w.Write(buffer.Slices.Length);
            foreach (var slice in buffer.Slices)
            {
                w.Write(slice.Completions.Length);
                for (int i = 0; i < slice.Completions.Length; i++)
                {
                    WriteInts(w, slice.Completions[i].Ids);
                    w.Write(slice.Completions[i].PromptLength);
                    w.Write(slice.Mask[i].Length);
                    foreach (bool m in slice.Mask[i]) w.Write(m);
                    w.Write(slice.Advantages[i]);
                    w.Write(slice.OldLogps != null);
                    if (slice.OldLogps != null) foreach (double v in slice.OldLogps[i]) w.Write(v);
                }
                w.Write(slice.Metrics.Count);
                foreach (var (k, v) in slice.Metrics) { w.Write(k); w.Write(v); }
            }
        });
    }

    public void LoadState(string directory)
    {
        string path = Path.Combine(directory, RolloutsFileName);
        _buffer = null;
        if (!File.Exists(path)) return;
        try
        {
            using var r = new BinaryReader(File.OpenRead(path));
            if (r.ReadString() != RolloutsMagic) throw new InvalidDataException("not a PeftSharp GRPO rollout buffer");
            var rows = ReadInts(r);
            var slices = new GrpoBatch[r.ReadInt32()];
            for (int s = 0; s < slices.Length; s++)
            {
                int n = r.ReadInt32();
                var completions = new TokenizedSequence[n];
                var mask = new bool[n][];
                var advantages = new double[n];
                double[][]? old = null;
                for (int i = 0; i < n; i++)
                {
                    completions[i] = new TokenizedSequence(ReadInts(r), r.ReadInt32());
                    mask[i] = new bool[r.ReadInt32()];
                    for (int t = 0; t < mask[i].Length; t++) mask[i][t] = r.ReadBoolean();
                    advantages[i] = r.ReadDouble();
                    if (r.ReadBoolean())
                    {
                        old ??= new double[n][];
                        old[i] = new double[mask[i].Length];
                        for (int t = 0; t < old[i].Length; t++) old[i][t] = r.ReadDouble();
                    }
                }
                var metrics = new Dictionary<string, double>(StringComparer.Ordinal);
                for (int m = r.ReadInt32(); m > 0; m--) metrics[r.ReadString()] = r.ReadDouble();
                slices[s] = new GrpoBatch
                {
                    Completions = completions, Sequences = SequenceBatch.Build(completions, _pad), PromptLengths = [.. completions.Select(c => c.PromptLength)],
                    Mask = mask, Advantages = advantages, OldLogps = old, Metrics = metrics,
                };
            }
            _buffer = (rows, slices);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or NullReferenceException)
        {
            throw new PeftSharpException($"{path}: the checkpoint's GRPO rollout buffer cannot be read ({e.Message}).", e);
        }
    }

    private const string RolloutsMagic = "peftsharp-grpo-rollouts-1";

    private static void WriteInts(BinaryWriter w, int[] values)
    {
        w.Write(values.Length);
        foreach (int v in values) w.Write(v);
    }

    private static int[] ReadInts(BinaryReader r)
    {
        var values = new int[r.ReadInt32()];
        if (values.Length > 1 << 28) throw new InvalidDataException($"a length of {values.Length}");
        for (int i = 0; i < values.Length; i++) values[i] = r.ReadInt32();
        return values;
    }

    /// <summary>
    /// The per-token log-probs of every completion token, completion after completion (the output layer runs on those rows
    /// only, not on the prompts': <see cref="ICausalLM.TokenLogProbsAt"/>).
    /// </summary>
    private Tensor CompletionLogProbs(Ops ops, SequenceBatch seq) =>
        _model.TokenLogProbsAt(ops, seq.Tokens, seq.Positions, seq.PositionTargets, _options.Temperature > 0 ? (float)_options.Temperature : 1f);

    /// <summary>Splits <see cref="CompletionLogProbs"/> into each completion's tokens.</summary>
    internal static unsafe double[][] PerToken(Tensor logps, GrpoBatch batch)
    {
        if (logps.Length != batch.Mask.Sum(m => (long)m.Length))
            throw new InvalidOperationException($"GRPO: {logps.Length} completion log-probs for {batch.Mask.Sum(m => m.Length)} completion tokens.");
        var result = new double[batch.Mask.Length][];
        int k = 0;
        for (int i = 0; i < result.Length; i++)
        {
            result[i] = new double[batch.Mask[i].Length];
            for (int j = 0; j < result[i].Length; j++) result[i][j] = logps.Data[k++];
        }
        return result;
    }

    /// <summary>Held-out prompts (data.eval_file): evaluation samples num_generations completions of each and reports their mean rewards.</summary>
    public IReadOnlyList<GrpoPrompt>? EvalPrompts { get; init; }
    /// <summary>Prompts per evaluation generation (per_device_eval_batch_size).</summary>
    public int EvalBatchSize { get; init; } = 8;
    /// <summary>The evaluation's sampling key: the same at every evaluation, so before and after are scored on the same random stream.</summary>
    public ulong EvalSeed { get; init; }

    public bool CanEvaluate => EvalPrompts is { Count: > 0 };
    public IReadOnlyCollection<string> EvalMetricNames =>
        ["reward", "completions/mean_length", .. _rewards.Select(r => $"rewards/{r.Name}/mean")];

    /// <summary>
    /// TRL's evaluation of GRPO, without the loss: num_generations sampled completions of every held-out prompt with the weights
    /// as they are, and the means over them of the weighted reward, each reward function's score and the completion length.
    /// </summary>
    public IReadOnlyDictionary<string, double> Evaluate(Tape tape)
    {
        var prompts = EvalPrompts ?? throw new InvalidOperationException("grpo: no evaluation prompts.");
        double reward = 0, length = 0;
        var sums = new double[_rewards.Count];
        var counts = new long[_rewards.Count];
        int n = 0, batch = Math.Max(1, EvalBatchSize);
        for (int c = 0; c * batch < prompts.Count; c++)
        {
            var rows = Enumerable.Range(c * batch, Math.Min(batch, prompts.Count - c * batch)).ToArray();
            var (_, rowIndex, generated) = Sample(prompts, rows, Rng.FoldIn(Rng.FoldIn(0x6576616C, EvalSeed), (ulong)c));
            var (_, perFunction, _) = Rewarded(prompts, rowIndex, generated);
            var (rewards, _, _) = GrpoLoss.Advantages(perFunction, _options.RewardWeights, _options.NumGenerations, _options.ScaleRewards);
            reward += rewards.Sum();
            length += generated.Sum(s => (double)s.Tokens.Length);
            n += generated.Count;
            for (int i = 0; i < perFunction.Length; i++)
                for (int f = 0; f < sums.Length; f++)
                    if (!double.IsNaN(perFunction[i][f])) { sums[f] += perFunction[i][f]; counts[f]++; }
        }
        var metrics = new Dictionary<string, double> { ["reward"] = reward / n, ["completions/mean_length"] = length / n };
        for (int f = 0; f < sums.Length; f++) metrics[$"rewards/{_rewards[f].Name}/mean"] = counts[f] > 0 ? sums[f] / counts[f] : 0;
        return metrics;
    }
}
