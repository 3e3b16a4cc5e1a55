using PeftSharp.Autograd;
using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Training.Sft;

/// <summary>
/// TRL's SFT objective: the causal-LM loss over the target tokens of tokenized rows (labels −100 are not
/// targets), evaluated as loss, perplexity and mean token accuracy, plus any metrics <see cref="ExtraEvaluation"/>
/// adds (BLEU, ROUGE-L from generations when metric_for_best_model asks for them).
/// </summary>
public sealed class SftObjective(ICausalLM model, SftDataset train, SftDataset? eval, int evalBatchSize) : ITrainingObjective<TokenBatch>, IShardedEvaluation
{
    /// <summary>The ranks the loss evaluation is split over (set by the trainer; null: this process scores everything).</summary>
    public Distributed.ICommunicator? EvaluationCommunicator { get; set; }

    public static readonly string[] LossMetricNames = ["loss", "perplexity", "mean_token_accuracy"];

    /// <summary>More evaluation metrics by name (without "eval_"), computed after the loss metrics.</summary>
    public (IReadOnlyCollection<string> Names, Func<IReadOnlyDictionary<string, double>> Compute)? ExtraEvaluation { get; init; }

    public SftDataset Train => train;
    public SftDataset? Eval => eval;
    public int RowCount => train.Count;
    public TokenBatch Collate(ReadOnlySpan<int> rows) => train.Collate(rows);
    public long TargetCount(TokenBatch batch) => SftDataset.TargetCount(batch);

    public long TokenCount(TokenBatch batch)
    {
        if (batch.AttentionMask == null) return batch.InputIds.Length;
        long n = 0;
        foreach (int m in batch.AttentionMask) n += m;
        return n;
    }

    public unsafe MicroBatchResult Accumulate(Tape tape, TokenBatch batch, double scale)
    {
        var ops = new Ops(tape);
        var loss = model.Loss(ops, batch);
        double value = *loss.Data;
        tape.Backward(ops.Scale(loss, (float)scale));
        tape.Reset();
        return new MicroBatchResult(value);
    }

    public bool CanEvaluate => eval != null;

    public IReadOnlyCollection<string> EvalMetricNames => [.. LossMetricNames, .. ExtraEvaluation?.Names ?? []];

    public IReadOnlyDictionary<string, double> Evaluate(Tape tape)
    {
        var m = LossEvaluation.Evaluate(model, eval ?? throw new PeftSharpException("training: no evaluation data."), evalBatchSize, tape, EvaluationCommunicator);
        var metrics = new Dictionary<string, double>
        {
            ["loss"] = m.Loss,
            ["perplexity"] = m.Perplexity,
            ["mean_token_accuracy"] = m.MeanTokenAccuracy,
        };
        if (ExtraEvaluation is { } extra)
            foreach (var (k, v) in extra.Compute()) metrics[k] = v;
        return metrics;
    }
}
