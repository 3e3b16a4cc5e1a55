using PeftSharp.Autograd;

namespace PeftSharp.Training.Preference;

/// <summary>
/// What the paired objectives (DPO, ORPO, reward) share: rows are tokenized chosen/rejected pairs, a micro-batch is
/// their chosen and rejected sequences in one batch, and the loss averages over pairs (the target count).
/// </summary>
public abstract class PairedObjective(IReadOnlyList<TokenizedPair> train, int padId) : ITrainingObjective<PairBatch>
{
    /// <summary>The pad id the batches are padded with.</summary>
    protected int PadId => padId;

    public int RowCount => train.Count;

    public PairBatch Collate(ReadOnlySpan<int> rows)
    {
        var pairs = new List<TokenizedPair>(rows.Length);
        foreach (int r in rows) pairs.Add(train[r]);
        return PairBatch.Build(pairs, padId);
    }

    public long TargetCount(PairBatch batch) => batch.Count;
    public long TokenCount(PairBatch batch) => batch.Sequences.TokenCount;
    public abstract MicroBatchResult Accumulate(Tape tape, PairBatch batch, double scale);
    public abstract bool CanEvaluate { get; }
    public abstract IReadOnlyCollection<string> EvalMetricNames { get; }
    public abstract IReadOnlyDictionary<string, double> Evaluate(Tape tape);
}
