using PeftSharp.Autograd;

namespace PeftSharp.Training.Preference;

/// <summary>
/// The preference objectives' evaluation: every batch without gradients and without dropout, each batch's metrics
/// weighted by its examples (or by the weights <c>weights</c> gives, as in training), the means over the whole set.
/// </summary>
internal static class PreferenceEvaluation
{
    public static Dictionary<string, double> Run<TBatch>(Tape tape, IEnumerable<TBatch> batches, Func<TBatch, int> count,
        Func<Ops, TBatch, Dictionary<string, double>> score, Func<TBatch, IReadOnlyDictionary<string, double>>? weights = null,
        Action<Dictionary<string, double>>? complete = null)
    {
        var pooled = new Dictionary<string, (double Sum, double Weight)>();
        bool grad = tape.GradEnabled, training = tape.Training;
        tape.GradEnabled = false;
        tape.Training = false;
        try
        {
            foreach (var batch in batches)
            {
                var w = weights?.Invoke(batch);
                foreach (var (k, v) in score(new Ops(tape), batch))
                {
                    double weight = w != null && w.TryGetValue(k, out var x) ? x : count(batch);
                    var (sum, total) = pooled.GetValueOrDefault(k);
                    pooled[k] = (sum + (weight > 0 ? v * weight : 0), total + weight);
                }
                tape.Reset();
            }
        }
        finally
        {
            tape.GradEnabled = grad;
            tape.Training = training;
        }
        var means = pooled.Where(kv => kv.Value.Weight > 0).ToDictionary(kv => kv.Key, kv => kv.Value.Sum / kv.Value.Weight);
        complete?.Invoke(means);
        return means;
    }

    /// <summary>The paired objectives' evaluation over <paramref name="set"/> in batches of <paramref name="batchSize"/> pairs.</summary>
    public static Dictionary<string, double> Pairs(Tape tape, IReadOnlyList<TokenizedPair> set, int batchSize, int padId,
        Func<Ops, PairBatch, Dictionary<string, double>> score) =>
        Run(tape, PairBatch.Batches(set, Math.Max(1, batchSize), padId), b => b.Count, score);
}
