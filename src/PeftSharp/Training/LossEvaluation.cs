using PeftSharp.Autograd;
using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Training;

/// <summary>Token-weighted evaluation: loss (mean over every target token, not a mean of batch means), perplexity = exp(loss), mean token accuracy (argmax == label).</summary>
public sealed record LossMetrics(double Loss, double Perplexity, double MeanTokenAccuracy, long TargetTokens);

public static class LossEvaluation
{
    /// <summary>
    /// Runs the model without gradients over <paramref name="data"/> in order, batches of <paramref name="batchSize"/>
    /// rows, and scores each shifted target (label at t+1 for the logits at t, -100 ignored). With a communicator of
    /// several ranks, rank r scores batches r, r + N, ... and the sums are all-reduced: every rank gets the same metrics.
    /// </summary>
    public static LossMetrics Evaluate(ICausalLM model, SftDataset data, int batchSize, Tape? tape = null, Distributed.ICommunicator? comm = null)
    {
        int rank = comm?.Rank ?? 0, ranks = comm?.Size ?? 1;
        bool own = tape == null;
        tape ??= new Tape();
        bool grad = tape.GradEnabled, training = tape.Training;
        tape.GradEnabled = false;
        tape.Training = false;
        try
        {
            var ops = new Ops(tape);
            double lossSum = 0;
            long count = 0, correct = 0;
            var indices = new int[Math.Min(batchSize, Math.Max(1, data.Count))];
            for (int start = rank * batchSize; start < data.Count; start += batchSize * ranks)
            {
                int n = Math.Min(batchSize, data.Count - start);
                for (int i = 0; i < n; i++) indices[i] = start + i;
                var batch = data.Collate(indices.AsSpan(0, n));
                int rows = batch.Batch * batch.SeqLen;
                var targets = batch.ShiftedTargets();
                var losses = new float[rows];
                var argmax = new int[rows];
                model.ScoreNextTokens(ops, batch, targets, losses, argmax);
                for (int r = 0; r < rows; r++)
                {
                    if (targets[r] == Kernels.CrossEntropy.IgnoreIndex) continue;
                    lossSum += losses[r];
                    count++;
                    if (argmax[r] == targets[r]) correct++;
                }
                tape.Reset();
            }
            if (ranks > 1)
            {
                Span<double> sums = [lossSum, count, correct];
                comm!.AllReduceSum(sums);
                (lossSum, count, correct) = (sums[0], (long)sums[1], (long)sums[2]);
            }
            if (count == 0)
                throw new PeftSharpException("evaluation: no tokens to score (every label is masked, or the examples are one token long).");
            double loss = lossSum / count;
            return new LossMetrics(loss, Math.Exp(loss), (double)correct / count, count);
        }
        finally
        {
            tape.GradEnabled = grad;
            tape.Training = training;
            if (own) tape.Dispose();
        }
    }
}
