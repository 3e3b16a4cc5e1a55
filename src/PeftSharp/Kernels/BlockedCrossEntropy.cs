using System.Numerics.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// Cross-entropy scores from logits that arrive a block of vocabulary columns at a time, so a caller that
/// only needs the loss (evaluation) never holds the (N, V) logits: an online logsumexp per row (running max
/// and rescaled sum), the target's logit when its column passes by, and the first maximum (argmax, for
/// accuracy). Ignored rows (<see cref="CrossEntropy.IgnoreIndex"/>) are skipped. The same arithmetic as
/// <see cref="CrossEntropy.Forward"/> up to f32 rounding of the rescaling.
/// </summary>
public static unsafe class BlockedCrossEntropy
{
    /// <summary>Per-row running state, length N each.</summary>
    public struct State
    {
        public float* Max, Sum, TargetLogit;
        public int* Argmax;
    }

    /// <summary>Resets the state and checks every target is in [0, vocab) or ignored.</summary>
    public static void Begin(State s, int* targets, int rows, int vocab)
    {
        CrossEntropy.ValidateTargets(targets, rows, vocab);
        new Span<float>(s.Max, rows).Fill(float.NegativeInfinity);
        new Span<float>(s.Sum, rows).Clear();
        new Span<float>(s.TargetLogit, rows).Clear();
        new Span<int>(s.Argmax, rows).Fill(-1);
    }

    /// <summary>Folds in logits block (N, width) holding vocabulary columns [column, column + width).</summary>
    public static void Accumulate(State s, float* block, int rows, int width, int column, int* targets)
    {
        var job = new Job { State = s, Block = block, Width = width, Column = column, Targets = targets };
        Parallelism.For(rows, &Row, &job);
    }

    /// <summary>losses[r] = logsumexp - target logit (0 where ignored); returns their mean over scored rows (0 when none).</summary>
    public static float Finish(State s, int* targets, float* losses, int rows)
    {
        double sum = 0;
        int count = 0;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == CrossEntropy.IgnoreIndex)
            {
                losses[r] = 0f;
                continue;
            }
            losses[r] = s.Max[r] + MathF.Log(s.Sum[r]) - s.TargetLogit[r];
            sum += losses[r];
            count++;
        }
        return count == 0 ? 0f : (float)(sum / count);
    }

    private struct Job
    {
        public State State;
        public float* Block;
        public int* Targets;
        public int Width, Column;
    }

    private static void Row(int r, void* state)
    {
        var j = (Job*)state;
        int t = j->Targets[r];
        if (t == CrossEntropy.IgnoreIndex) return;
        int width = j->Width;
        float* row = j->Block + (long)r * width;
        ref var s = ref j->State;
        int at = TensorPrimitives.IndexOfMax(new ReadOnlySpan<float>(row, width));
        float blockMax = row[at];
        if (blockMax > s.Max[r] || s.Argmax[r] < 0)
        {
            s.Sum[r] = s.Argmax[r] < 0 ? 0f : s.Sum[r] * MathF.Exp(s.Max[r] - blockMax);
            s.Max[r] = blockMax;
            s.Argmax[r] = j->Column + at;
        }
        s.Sum[r] += Elementwise.Sum(new Softmax.ExpShiftOp(s.Max[r]), width, row);
        if (t >= j->Column && t < j->Column + width) s.TargetLogit[r] = row[t - j->Column];
    }
}
