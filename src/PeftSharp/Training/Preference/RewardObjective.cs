using PeftSharp.Autograd;
using PeftSharp.Data;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Preference;

/// <summary>
/// TRL's RewardTrainer as an objective on a <see cref="SequenceClassifier"/> with one label: the chosen and rejected texts
/// (prompt + completion) go through the model in one batch; loss = mean over pairs of −logσ(r_c − r_r − margin) plus
/// center_rewards_coefficient·mean((r_c + r_r)²). Logged and evaluated: accuracy (r_c &gt; r_r), margin (mean r_c − r_r),
/// rewards/chosen, rewards/rejected.
/// </summary>
public sealed class RewardObjective(SequenceClassifier model, PreferenceOptions options, IReadOnlyList<TokenizedPair> train,
    IReadOnlyList<TokenizedPair>? eval, int evalBatchSize, int padId) : PairedObjective(train, padId)
{
    public static readonly string[] MetricNames = ["accuracy", "margin", "rewards/chosen", "rewards/rejected"];

    /// <summary>
    /// Each text as RewardTrainer tokenizes it: prompt + completion encoded with the tokenizer's special tokens, its first
    /// max_length tokens kept.
    /// </summary>
    public static List<TokenizedPair> Tokenize(IReadOnlyList<PreferenceExample> examples, Tokenizer tokenizer, int? maxLength)
    {
        TokenizedSequence Encode(string text)
        {
            var ids = tokenizer.Encode(text, addSpecialTokens: true);
            if (maxLength is int m && ids.Length > m) ids = ids[..m];
            return new TokenizedSequence(ids, 0);
        }
        return examples.Select((e, i) => new TokenizedPair(i,
            Encode(e.Prompt + (e.Chosen ?? throw new PeftSharpException($"{e.Where}: the reward trainer needs paired data (chosen and rejected)."))),
            Encode(e.Prompt + e.Rejected), e.Margin ?? 0)).ToList();
    }

    public override MicroBatchResult Accumulate(Tape tape, PairBatch batch, double scale)
    {
        var ops = new Ops(tape);
        bool training = tape.Training;
        try
        {
            tape.Training = training && !options.DisableDropout;
            var rewards = Rewards(ops, batch);
            var (loss, gradient, metrics) = Loss(OrpoObjective.Values(rewards), batch.Pairs.Select(p => p.Margin).ToArray(), options.CenterRewardsCoefficient);
            tape.Backward(ops.Scale(ops.ScalarFunction(rewards, loss, gradient), (float)scale));
            return new MicroBatchResult(loss, metrics);
        }
        finally
        {
            tape.Training = training;
            tape.Reset();
        }
    }

    private Tensor Rewards(Ops ops, PairBatch batch)
    {
        var logits = model.Classify(ops, batch.Sequences.Tokens);
        if (logits.Columns != 1) throw new PeftSharpException($"the reward trainer needs a model with one label (num_labels 1); this one has {logits.Columns}.");
        return Ops.Reshape(logits, logits.Rows);
    }

    public override bool CanEvaluate => eval != null;
    public override IReadOnlyCollection<string> EvalMetricNames => ["loss", .. MetricNames];

    public override IReadOnlyDictionary<string, double> Evaluate(Tape tape) =>
        PreferenceEvaluation.Pairs(tape, eval ?? throw new PeftSharpException("training: no evaluation data."), evalBatchSize, PadId, (ops, batch) =>
        {
            var (loss, _, metrics) = Loss(OrpoObjective.Values(Rewards(ops, batch)), batch.Pairs.Select(p => p.Margin).ToArray(), options.CenterRewardsCoefficient);
            metrics["loss"] = loss;
            return metrics;
        });

    /// <summary>The reward loss of a batch from its rewards (chosen first, then rejected), its gradient by them, and the metrics.</summary>
    public static (double Loss, double[] Gradient, Dictionary<string, double> Metrics) Loss(double[] rewards, double[] margins, double? centerCoefficient)
    {
        int n = rewards.Length / 2;
        var gradient = new double[2 * n];
        double loss = 0, acc = 0, margin = 0, rc = 0, rr = 0;
        for (int i = 0; i < n; i++)
        {
            double c = rewards[i], r = rewards[n + i];
            var (l, d) = PreferenceLosses.Reward(c, r, margins[i]);
            loss += l / n;
            gradient[i] += d / n;
            gradient[n + i] -= d / n;
            if (centerCoefficient is double k)
            {
                double s = c + r;
                loss += k * s * s / n;
                gradient[i] += 2 * k * s / n;
                gradient[n + i] += 2 * k * s / n;
            }
            acc += c > r ? 1 : 0;
            margin += c - r;
            rc += c;
            rr += r;
        }
        return (loss, gradient, new Dictionary<string, double>
        {
            ["accuracy"] = acc / n, ["margin"] = margin / n, ["rewards/chosen"] = rc / n, ["rewards/rejected"] = rr / n,
        });
    }
}
