using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Preference;

/// <summary>
/// TRL's ORPOTrainer as an objective (no reference model): loss = NLL of the chosen completions' tokens (a token mean over the
/// batch) − mean over pairs of β·logσ(log_odds), log_odds from the mean token log-probs of chosen and rejected
/// (<see cref="PreferenceLosses.OrpoOddsRatio"/>). Logged: rewards/chosen and rewards/rejected (β × mean log-prob),
/// rewards/accuracies, rewards/margins, logps/chosen, logps/rejected (mean log-probs), nll_loss, log_odds_ratio, log_odds_chosen.
/// </summary>
public sealed class OrpoObjective(ICausalLM model, PreferenceOptions options, IReadOnlyList<TokenizedPair> train, IReadOnlyList<TokenizedPair>? eval,
    int evalBatchSize, int padId) : PairedObjective(train, padId)
{
    public static readonly string[] MetricNames =
        ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "nll_loss", "log_odds_ratio", "log_odds_chosen"];

    public override MicroBatchResult Accumulate(Tape tape, PairBatch batch, double scale)
    {
        var ops = new Ops(tape);
        bool training = tape.Training;
        try
        {
            tape.Training = training && !options.DisableDropout;
            var sums = batch.Sequences.LogProbSums(model, ops);
            var (loss, gradient, metrics) = Loss(Values(sums), batch.Sequences.CompletionTargets, options.Beta);
            tape.Backward(ops.Scale(ops.ScalarFunction(sums, loss, gradient), (float)scale));
            return new MicroBatchResult(loss, metrics);
        }
        finally
        {
            tape.Training = training;
            tape.Reset();
        }
    }

    public override bool CanEvaluate => eval != null;
    public override IReadOnlyCollection<string> EvalMetricNames => ["loss", .. MetricNames];

    public override IReadOnlyDictionary<string, double> Evaluate(Tape tape) =>
        PreferenceEvaluation.Pairs(tape, eval ?? throw new PeftSharpException("training: no evaluation data."), evalBatchSize, PadId, (ops, batch) =>
        {
            var (loss, _, metrics) = Loss(Values(batch.Sequences.LogProbSums(model, ops)), batch.Sequences.CompletionTargets, options.Beta);
            metrics["loss"] = loss;
            return metrics;
        });

    internal static unsafe double[] Values(Tensor t)
    {
        var v = new double[t.Length];
        for (int i = 0; i < v.Length; i++) v[i] = t.Data[i];
        return v;
    }

    /// <summary>ORPO's loss of a batch from the sequence log-prob sums (chosen first), its gradient by them, and the metrics.</summary>
    public static (double Loss, double[] Gradient, Dictionary<string, double> Metrics) Loss(double[] sums, int[] counts, double beta)
    {
        int n = sums.Length / 2;
        var gradient = new double[2 * n];
        double tokens = 0, chosenSum = 0;
        for (int i = 0; i < n; i++) { tokens += counts[i]; chosenSum += sums[i]; }
        double nll = tokens == 0 ? 0 : -chosenSum / tokens;
        double loss = nll, ratioSum = 0, oddsSum = 0, rc = 0, rr = 0, acc = 0;
        for (int i = 0; i < n; i++)
        {
            if (tokens > 0) gradient[i] = -1 / tokens;
            double nc = Math.Max(1, counts[i]), nr = Math.Max(1, counts[n + i]);
            double ac = sums[i] / nc, ar = sums[n + i] / nr;
            var (term, logOdds, dc, dr) = PreferenceLosses.OrpoOddsRatio(beta, ac, ar);
            loss += term / n;
            gradient[i] += dc / n / nc;
            gradient[n + i] += dr / n / nr;
            ratioSum += PreferenceMath.LogSigmoid(logOdds);
            oddsSum += logOdds;
            rc += beta * ac; rr += beta * ar; acc += ac > ar ? 1 : 0;
        }
        var metrics = new Dictionary<string, double>
        {
            ["rewards/chosen"] = rc / n, ["rewards/rejected"] = rr / n, ["rewards/accuracies"] = acc / n, ["rewards/margins"] = (rc - rr) / n,
            ["logps/chosen"] = rc / beta / n, ["logps/rejected"] = rr / beta / n, ["nll_loss"] = nll,
            ["log_odds_ratio"] = ratioSum / n, ["log_odds_chosen"] = oddsSum / n,
        };
        return (loss, gradient, metrics);
    }
}
