using PeftSharp.Autograd;

namespace PeftSharp.Training.Preference;

/// <summary>
/// The preference objectives' evaluation: every batch without gradients and without dropout, each batch's metrics
/// weighted by its examples, the means over the whole set.
/// </summary>
internal static class PreferenceEvaluation
{
    public static Dictionary<string, double> Run<TBatch>(Tape tape, IEnumerable<TBatch> batches, int examples, Func<TBatch, int> count,
        Func<Ops, TBatch, Dictionary<string, double>> score)
    {
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
