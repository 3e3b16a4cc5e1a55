using PeftSharp.Autograd;
using PeftSharp.Kernels;

namespace PeftSharp.Models;

/// <summary>Runs <see cref="BlockedCrossEntropy"/> over logits produced block by block (see <see cref="ICausalLM.ScoreNextTokens"/>).</summary>
public static unsafe class NextTokenScores
{
    /// <summary>
    /// The (rows, width) logits of vocabulary columns [column, column + width): written into <paramref name="scratch"/>
    /// (rows × block width floats; null when the caller asked for none) or found elsewhere; returns where they are.
    /// </summary>
    public delegate float* BlockSource(int column, int width, float* scratch);

    /// <summary>
    /// Scores <paramref name="rows"/> rows over a vocabulary of <paramref name="vocab"/> columns, asking <paramref name="write"/>
    /// for blocks of <paramref name="blockWidth"/> columns (the last one narrower). Its scratch is released from the arena before it returns.
    /// </summary>
    public static float Score(Tape tape, ReadOnlySpan<int> targets, Span<float> losses, Span<int> argmax, int rows, int vocab,
        BlockSource source, int blockWidth, bool scratch = true)
    {
        if (targets.Length != rows || losses.Length != rows || argmax.Length != rows)
            throw new ArgumentException($"ScoreNextTokens: {rows} rows, but {targets.Length} targets, {losses.Length} losses and {argmax.Length} argmax entries.");
        var mark = tape.Arena.Mark();
        try
        {
            var state = new BlockedCrossEntropy.State
            {
                Max = tape.Scratch(rows),
                Sum = tape.Scratch(rows),
                TargetLogit = tape.Scratch(rows),
                Argmax = (int*)tape.Scratch(rows),
            };
            float* buffer = scratch ? tape.Scratch((long)rows * Math.Min(blockWidth, vocab)) : null;
            fixed (int* t = targets)
            fixed (float* l = losses)
            {
                BlockedCrossEntropy.Begin(state, t, rows, vocab);
                for (int column = 0; column < vocab; column += blockWidth)
                {
                    int width = Math.Min(blockWidth, vocab - column);
                    BlockedCrossEntropy.Accumulate(state, source(column, width, buffer), rows, width, column, t);
                }
                new ReadOnlySpan<int>(state.Argmax, rows).CopyTo(argmax);
                return BlockedCrossEntropy.Finish(state, t, l, rows);
            }
        }
        finally
        {
            tape.Arena.Release(mark);
        }
    }

    /// <summary>Columns per block: about 4 Mi logits (16 MiB) at a time, a multiple of 48 (the GEMM's column strip), at least 480.</summary>
    public static int BlockWidth(int rows, int vocab) => Math.Min(vocab, Math.Max(480, (1 << 22) / Math.Max(1, rows) / 48 * 48));
}
