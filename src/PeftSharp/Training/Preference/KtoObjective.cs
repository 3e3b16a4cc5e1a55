using PeftSharp.Autograd;
using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Training.Preference;

/// <summary>An unpaired example: prompt + completion, desirable or not, and the mismatched sequence its KL term uses.</summary>
public sealed record TokenizedUnpaired(int Index, TokenizedSequence Sequence, bool Desirable, TokenizedSequence Mismatched);

/// <summary>The examples of a KTO micro-batch: their sequences in rows 0..n−1, the mismatched (KL) ones in rows n..2n−1.</summary>
public sealed record UnpairedBatch(IReadOnlyList<TokenizedUnpaired> Examples, SequenceBatch Completions, SequenceBatch Mismatched)
{
    public int Count => Examples.Count;

    public static UnpairedBatch Build(IReadOnlyList<TokenizedUnpaired> examples, int padId) =>
        new(examples, SequenceBatch.Build(examples.Select(e => e.Sequence).ToList(), padId), SequenceBatch.Build(examples.Select(e => e.Mismatched).ToList(), padId));

    /// <summary>
    /// Tokenizes unpaired examples. The KL term's mismatched sequences are made as TRL's KTOTrainer makes its KL dataset: in chunks
    /// of <paramref name="totalBatchSize"/> examples in dataset order, example i's prompt gets the completion of the example before
    /// it (the first gets the chunk's last).
    /// </summary>
    public static List<TokenizedUnpaired> Tokenize(IReadOnlyList<PreferenceExample> examples, PreferenceTokenizer tokenizer, int totalBatchSize)
    {
        var prompts = examples.Select(e => tokenizer.Prompt(e.Prompt)).ToList();
        var completions = examples.Select(e => tokenizer.Completion(e.Completion
            ?? throw new PeftSharpException($"{e.Where}: this trainer needs unpaired data (prompt, completion, label)."))).ToList();
        var result = new List<TokenizedUnpaired>(examples.Count);
        for (int start = 0; start < examples.Count; start += totalBatchSize)
        {
            int end = Math.Min(examples.Count, start + totalBatchSize);
            for (int i = start; i < end; i++)
            {
                int previous = i == start ? end - 1 : i - 1;
                result.Add(new TokenizedUnpaired(i, tokenizer.Combine(prompts[i], completions[i]), examples[i].Label, tokenizer.Combine(prompts[i], completions[previous])));
            }
        }
        return result;
    }
}

/// <summary>
/// TRL's KTOTrainer as an objective. The KL estimate is the batch mean of policy − reference log-probs of the mismatched
/// sequences, clamped at 0 and detached (no gradient). Each desirable example's loss is desirable_weight·(1 − σ(β(logratio − KL))),
/// each undesirable one's undesirable_weight·(1 − σ(β(KL − logratio))), logratio = policy − reference sum of completion log-probs;
/// the loss is their mean. Logged: rewards/chosen, rewards/rejected (β·logratio, means over the batch's desirable and undesirable
/// examples, 0 when it has none), rewards/margins, logps/chosen, logps/rejected, kl.
/// </summary>
public sealed class KtoObjective : ITrainingObjective<UnpairedBatch>
{
    public static readonly string[] MetricNames = ["rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl"];

    private readonly ICausalLM _model;
    private readonly PreferenceOptions _options;
    private readonly IReadOnlyList<TokenizedUnpaired> _train;
    private readonly IReadOnlyList<TokenizedUnpaired>? _eval;
    private readonly int _evalBatchSize, _padId;
    private readonly IReferenceModel? _reference;
    private readonly Dictionary<IReadOnlyList<TokenizedUnpaired>, (double[] Completion, double[] Mismatched)> _precomputed = new(ReferenceEqualityComparer.Instance);

    public KtoObjective(ICausalLM model, PreferenceOptions options, IReadOnlyList<TokenizedUnpaired> train, IReadOnlyList<TokenizedUnpaired>? eval,
        int evalBatchSize, int padId, IReferenceModel? reference)
    {
        options.Validate("kto");
        _model = model;
        _options = options;
        _train = train;
        _eval = eval;
        _evalBatchSize = Math.Max(1, evalBatchSize);
        _padId = padId;
        _reference = reference;
        if (reference == null && !options.PrecomputeRefLogProbs)
            throw new PeftSharpException("kto: the reference model is the policy with its adapter off, so full fine-tuning needs kto.precompute_ref_log_probs: true.");
        if (options.PrecomputeRefLogProbs)
        {
            Precompute(train);
            if (eval != null) Precompute(eval);
        }
    }

    public int RowCount => _train.Count;
    public UnpairedBatch Collate(ReadOnlySpan<int> rows)
    {
        var list = new List<TokenizedUnpaired>(rows.Length);
        foreach (int r in rows) list.Add(_train[r]);
        return UnpairedBatch.Build(list, _padId);
    }

    public long TargetCount(UnpairedBatch batch) => batch.Count;
    public long TokenCount(UnpairedBatch batch) => batch.Completions.TokenCount + batch.Mismatched.TokenCount;

    public MicroBatchResult Accumulate(Tape tape, UnpairedBatch batch, double scale)
    {
        var ops = new Ops(tape);
        bool training = tape.Training;
        try
        {
            var (refCompletion, refMismatched) = Reference(ops, batch, _train);
            var policyMismatched = batch.Mismatched.LogProbSumsNoGrad(_model, ops);
            tape.Training = training && !_options.DisableDropout;
            var sums = batch.Completions.LogProbSums(_model, ops);
            var desirable = batch.Examples.Select(e => e.Desirable).ToArray();
            var (loss, gradient, metrics) = Loss(_options, OrpoObjective.Values(sums), desirable, refCompletion, policyMismatched, refMismatched);
            tape.Backward(ops.Scale(ops.ScalarFunction(sums, loss, gradient), (float)scale));
            return new MicroBatchResult(loss, metrics, MetricWeights(desirable));
        }
        finally
        {
            tape.Training = training;
            tape.Reset();
        }
    }

    /// <summary>
    /// As TRL pools them (sums and counts over the batch): rewards/chosen and logps/chosen are means over the desirable
    /// examples, the rejected ones over the undesirable; rewards/margins is chosen − rejected of the pooled means.
    /// </summary>
    private static Dictionary<string, double> MetricWeights(bool[] desirable)
    {
        int chosen = desirable.Count(d => d), rejected = desirable.Length - chosen;
        return new Dictionary<string, double>
        {
            ["rewards/chosen"] = chosen, ["logps/chosen"] = chosen, ["rewards/rejected"] = rejected, ["logps/rejected"] = rejected,
            ["rewards/margins"] = 0,
        };
    }

    public void CompleteStepMetrics(IDictionary<string, double> metrics)
    {
        if (metrics.TryGetValue("rewards/chosen", out var c) && metrics.TryGetValue("rewards/rejected", out var r)) metrics["rewards/margins"] = c - r;
    }

    public bool CanEvaluate => _eval != null;
    public IReadOnlyCollection<string> EvalMetricNames => ["loss", .. MetricNames];

    public IReadOnlyDictionary<string, double> Evaluate(Tape tape)
    {
        var eval = _eval ?? throw new PeftSharpException("training: no evaluation data.");
        var batches = Enumerable.Range(0, (eval.Count + _evalBatchSize - 1) / _evalBatchSize)
            .Select(i => UnpairedBatch.Build(eval.Skip(i * _evalBatchSize).Take(_evalBatchSize).ToList(), _padId));
        return PreferenceEvaluation.Run(tape, batches, b => b.Count, (ops, batch) =>
        {
            var (rc, rm) = Reference(ops, batch, eval);
            var pm = batch.Mismatched.LogProbSumsNoGrad(_model, ops);
            var sums = batch.Completions.LogProbSumsNoGrad(_model, ops);
            var (loss, _, metrics) = Loss(_options, sums, batch.Examples.Select(e => e.Desirable).ToArray(), rc, pm, rm);
            metrics["loss"] = loss;
            return metrics;
        }, batch => MetricWeights(batch.Examples.Select(e => e.Desirable).ToArray()), CompleteStepMetrics);
    }

    private (double[] Completion, double[] Mismatched) Reference(Ops ops, UnpairedBatch batch, IReadOnlyList<TokenizedUnpaired> set)
    {
        if (_precomputed.TryGetValue(set, out var pre))
            return (batch.Examples.Select(e => pre.Completion[e.Index]).ToArray(), batch.Examples.Select(e => pre.Mismatched[e.Index]).ToArray());
        using var scope = _reference!.Enter();
        return (batch.Completions.LogProbSumsNoGrad(_model, ops), batch.Mismatched.LogProbSumsNoGrad(_model, ops));
    }

    private void Precompute(IReadOnlyList<TokenizedUnpaired> set)
    {
        var completion = new double[set.Count];
        var mismatched = new double[set.Count];
        using var tape = new Tape();
        var ops = new Ops(tape);
        using var scope = _reference?.Enter();
        for (int i = 0; i < set.Count; i += _evalBatchSize)
        {
            var batch = UnpairedBatch.Build(set.Skip(i).Take(_evalBatchSize).ToList(), _padId);
            var c = batch.Completions.LogProbSumsNoGrad(_model, ops);
            var m = batch.Mismatched.LogProbSumsNoGrad(_model, ops);
            for (int j = 0; j < batch.Count; j++)
            {
                completion[batch.Examples[j].Index] = c[j];
                mismatched[batch.Examples[j].Index] = m[j];
            }
            tape.Reset();
        }
        _precomputed[set] = (completion, mismatched);
    }

    /// <summary>KTO's loss of a batch from the policy's completion log-prob sums, its gradient by them, and the metrics.</summary>
    public static (double Loss, double[] Gradient, Dictionary<string, double> Metrics) Loss(PreferenceOptions options, double[] sums, bool[] desirable,
        double[] refSums, double[] policyMismatched, double[] refMismatched)
    {
        int n = sums.Length;
        double kl = 0;
        for (int i = 0; i < n; i++) kl += policyMismatched[i] - refMismatched[i];
        kl = Math.Max(0, kl / n);
        var gradient = new double[n];
        double loss = 0, rc = 0, rr = 0, lc = 0, lr = 0;
        int nc = 0, nr = 0;
        for (int i = 0; i < n; i++)
        {
            double ratio = sums[i] - refSums[i];
            var (l, d) = PreferenceLosses.Kto(desirable[i], options.Beta, desirable[i] ? options.DesirableWeight : options.UndesirableWeight, ratio, kl);
            loss += l / n;
            gradient[i] = d / n;
            if (desirable[i]) { rc += options.Beta * ratio; lc += sums[i]; nc++; }
            else { rr += options.Beta * ratio; lr += sums[i]; nr++; }
        }
        double chosen = nc == 0 ? 0 : rc / nc, rejected = nr == 0 ? 0 : rr / nr;
        var metrics = new Dictionary<string, double>
        {
            ["rewards/chosen"] = chosen, ["rewards/rejected"] = rejected, ["rewards/margins"] = chosen - rejected,
            ["logps/chosen"] = nc == 0 ? 0 : lc / nc, ["logps/rejected"] = nr == 0 ? 0 : lr / nr, ["kl"] = kl,
        };
        return (loss, gradient, metrics);
    }
}
