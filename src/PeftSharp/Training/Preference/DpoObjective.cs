using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Preference;

/// <summary>
/// TRL's DPOTrainer as an objective: the chosen and rejected sequences of a batch go through the policy in one forward;
/// the reference log-probs come from the same model with its adapters switched off (a no-grad forward, or precomputed
/// once with precompute_ref_log_probs), or are 0 with reference_free. Sequence log-probs are sums over completion
/// tokens (means for ipo). The loss is the mean over pairs of <see cref="PreferenceLosses.Dpo"/>, plus rpo_alpha × the
/// mean NLL of the chosen completions' tokens. Logged: rewards/chosen, rewards/rejected, rewards/accuracies,
/// rewards/margins, logps/chosen, logps/rejected (and nll_loss with rpo_alpha), means over pairs.
/// </summary>
public sealed class DpoObjective : PairedObjective
{
    public static readonly string[] MetricNames =
        ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"];

    private readonly ICausalLM _model;
    private readonly PreferenceOptions _options;
    private readonly IReadOnlyList<TokenizedPair> _train;
    private readonly IReadOnlyList<TokenizedPair>? _eval;
    private readonly int _evalBatchSize, _padId;
    private readonly IReferenceModel? _reference;
    private readonly Dictionary<IReadOnlyList<TokenizedPair>, (double[] Chosen, double[] Rejected)> _precomputed = new(ReferenceEqualityComparer.Instance);

    /// <param name="reference">The reference (the policy with its adapters off); null for full fine-tuning, which then needs
    /// reference_free or precompute_ref_log_probs (computed here, from the weights before training).</param>
    public DpoObjective(ICausalLM model, PreferenceOptions options, IReadOnlyList<TokenizedPair> train, IReadOnlyList<TokenizedPair>? eval,
        int evalBatchSize, int padId, IReferenceModel? reference) : base(train, padId)
    {
        options.Validate("dpo");
        _model = model;
        _options = options;
        _train = train;
        _eval = eval;
        _evalBatchSize = Math.Max(1, evalBatchSize);
        _padId = padId;
        _reference = reference;
        if (!options.ReferenceFree && reference == null && !options.PrecomputeRefLogProbs)
            throw new PeftSharpException("dpo: the reference model is the policy with its adapter off, so full fine-tuning needs " +
                "dpo.precompute_ref_log_probs: true (the reference log-probs of the starting weights) or dpo.reference_free: true.");
        if (options.PrecomputeRefLogProbs)
        {
            Precompute(train);
            if (eval != null) Precompute(eval);
        }
    }

    public override MicroBatchResult Accumulate(Tape tape, PairBatch batch, double scale)
    {
        var ops = new Ops(tape);
        bool training = tape.Training;
        try
        {
            var (refChosen, refRejected) = Reference(ops, batch, _train);
            tape.Training = training && !_options.DisableDropout;
            var sums = batch.Sequences.LogProbSums(_model, ops);
            var (loss, gradient, metrics) = Loss(sums, batch, refChosen, refRejected);
            tape.Backward(ops.Scale(ops.ScalarFunction(sums, loss, gradient), (float)scale));
            return new MicroBatchResult(loss, metrics);
        }
        finally
        {
            tape.Training = training;
            tape.Reset();
        }
    }

    public override bool CanEvaluate => _eval != null;
    public override IReadOnlyCollection<string> EvalMetricNames => ["loss", .. MetricNames, .. _options.RpoAlpha != null ? ["nll_loss"] : Array.Empty<string>()];

    public override IReadOnlyDictionary<string, double> Evaluate(Tape tape)
    {
        var eval = _eval ?? throw new PeftSharpException("training: no evaluation data.");
        return PreferenceEvaluation.Pairs(tape, eval, _evalBatchSize, _padId, (ops, batch) =>
        {
            var (refChosen, refRejected) = Reference(ops, batch, eval);
            var (loss, _, metrics) = Loss(batch.Sequences.LogProbSums(_model, ops), batch, refChosen, refRejected);
            metrics["loss"] = loss;
            return metrics;
        });
    }

    private (double[] Chosen, double[] Rejected) Reference(Ops ops, PairBatch batch, IReadOnlyList<TokenizedPair> set)
    {
        int n = batch.Count;
        if (_options.ReferenceFree) return (new double[n], new double[n]);
        if (_precomputed.TryGetValue(set, out var pre))
            return (batch.Pairs.Select(p => pre.Chosen[p.Index]).ToArray(), batch.Pairs.Select(p => pre.Rejected[p.Index]).ToArray());
        using var scope = _reference!.Enter();
        var sums = batch.Sequences.LogProbSumsNoGrad(_model, ops);
        return (sums[..n], sums[n..]);
    }

    private void Precompute(IReadOnlyList<TokenizedPair> set)
    {
        var chosen = new double[set.Count];
        var rejected = new double[set.Count];
        using var tape = new Tape();
        var ops = new Ops(tape);
        using var scope = _reference?.Enter();
        foreach (var batch in PairBatch.Batches(set, _evalBatchSize, _padId))
        {
            var sums = batch.Sequences.LogProbSumsNoGrad(_model, ops);
            for (int i = 0; i < batch.Count; i++)
            {
                chosen[batch.Pairs[i].Index] = sums[i];
                rejected[batch.Pairs[i].Index] = sums[batch.Count + i];
            }
            tape.Reset();
        }
        _precomputed[set] = (chosen, rejected);
    }

    /// <summary>The batch's mean loss, its gradient by each sequence's log-prob sum (chosen first), and the metrics.</summary>
    private (double Loss, double[] Gradient, Dictionary<string, double> Metrics) Loss(Tensor sums, PairBatch batch, double[] refChosen, double[] refRejected) =>
        Loss(_options, OrpoObjective.Values(sums), batch.Sequences.CompletionTargets, refChosen, refRejected);

    /// <summary>
    /// DPO's loss of a batch from the policy's sequence log-prob sums (chosen first, then rejected), the completion token counts
    /// and the reference sums; its gradient by the policy sums, and the metrics.
    /// </summary>
    public static (double Loss, double[] Gradient, Dictionary<string, double> Metrics) Loss(PreferenceOptions options, double[] sums, int[] counts,
        double[] refChosen, double[] refRejected)
    {
        int n = sums.Length / 2;
        bool ipo = options.LossType == "ipo";
        // ipo compares mean token log-probs (TRL divides the sums by the completion lengths, policy and reference alike).
        double Norm(int row) => ipo ? 1.0 / Math.Max(1, counts[row]) : 1.0;
        var gradient = new double[2 * n];
        double loss = 0, rc = 0, rr = 0, acc = 0, lc = 0, lr = 0;
        double beta = options.Beta;
        for (int i = 0; i < n; i++)
        {
            double pc = sums[i] * Norm(i), pr = sums[n + i] * Norm(n + i);
            double qc = refChosen[i] * Norm(i), qr = refRejected[i] * Norm(n + i);
            double z = (pc - pr) - (qc - qr);
            var (l, dz) = PreferenceLosses.Dpo(options.LossType, beta, options.LabelSmoothing, z);
            loss += l / n;
            gradient[i] = dz / n * Norm(i);
            gradient[n + i] = -dz / n * Norm(n + i);
            double cr = beta * (pc - qc), rj = beta * (pr - qr);
            rc += cr; rr += rj; acc += cr > rj ? 1 : 0; lc += pc; lr += pr;
        }
        var metrics = new Dictionary<string, double>
        {
            ["rewards/chosen"] = rc / n, ["rewards/rejected"] = rr / n, ["rewards/accuracies"] = acc / n,
            ["rewards/margins"] = (rc - rr) / n, ["logps/chosen"] = lc / n, ["logps/rejected"] = lr / n,
        };
        if (options.RpoAlpha is double alpha)
        {
            // TRL's nll_loss: cross-entropy over every chosen completion token of the batch (a token mean).
            double tokens = 0, sum = 0;
            for (int i = 0; i < n; i++) { tokens += counts[i]; sum += sums[i]; }
            double nll = tokens == 0 ? 0 : -sum / tokens;
            loss += alpha * nll;
            if (tokens > 0) for (int i = 0; i < n; i++) gradient[i] += -alpha / tokens;
            metrics["nll_loss"] = nll;
        }
        return (loss, gradient, metrics);
    }
}
