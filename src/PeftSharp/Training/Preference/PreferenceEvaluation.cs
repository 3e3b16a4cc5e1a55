using PeftSharp.Autograd;

namespace PeftSharp.Training.Preference;

/// <summary>
/// The preference objectives' evaluation: every batch without gradients and without dropout, each batch's metrics
/// weighted by its examples (or by the weights <c>weights</c> gives, as in training), the means over the whole set.
/// </summary>
internal static class PreferenceEvaluation
{
    public static Dictionary<string, double> Run<TBatch>(Tape tape, IEnumerable<TBatch> batches, int examples, Func<TBatch, int> count,
        Func<Ops, TBatch, Dictionary<string, double>> score, Func<TBatch, IReadOnlyDictionary<string, double>>? weights = null,
        Action<Dictionary<string, double>>? complete = null)
    {
        if (weights != null)
        {
            var pooled = new Dictionary<string, (double Sum, double Weight)>();
            Run(tape, batches, examples, count, (ops, batch) =>
            {
                var metrics = score(ops, batch);
                var w = weights(batch);
                foreach (var (k, v) in metrics)
                {
                    double weight = w.TryGetValue(k, out var x) ? x : count(batch);
                    var (sum, total) = pooled.GetValueOrDefault(k);
                    pooled[k] = (sum + (weight > 0 ? v * weight : 0), total + weight);
                }
                return [];
            });
            var means = pooled.Where(kv => kv.Value.Weight > 0).ToDictionary(kv => kv.Key, kv => kv.Value.Sum / kv.Value.Weight);
            complete?.Invoke(means);
            return means;
        }
        var totals = new Dictionary<string, double>();
        bool grad = tape.GradEnabled, training = tape.Training;
        tape.GradEnabled = false;
        tape.Training = false;
        try
        {
            foreach (var batch in batches)
            {
                foreach (var (k, v) in score(new Ops(tape), batch)) totals[k] = totals.GetValueOrDefault(k) + v * count(batch);
                tape.Reset();
            }
        }
        finally
        {
            tape.GradEnabled = grad;
            tape.Training = training;
        }
        return totals.ToDictionary(kv => kv.Key, kv => kv.Value / examples);
    }

    /// <summary>The paired objectives' evaluation over <paramref name="set"/> in batches of <paramref name="batchSize"/> pairs.</summary>
    public static Dictionary<string, double> Pairs(Tape tape, IReadOnlyList<TokenizedPair> set, int batchSize, int padId,
        Func<Ops, PairBatch, Dictionary<string, double>> score) =>
        Run(tape, PairBatch.Batches(set, Math.Max(1, batchSize), padId), set.Count, b => b.Count, score);
}
