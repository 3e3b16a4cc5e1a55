using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>Row-wise numerically stable softmax, and the fused softmax + cross-entropy loss.</summary>
public static unsafe class Softmax
{
    /// <summary>y = exp(x - max)/Σ per row (y may alias x).</summary>
    public static void Forward(float* x /* (N, C) */, float* y /* (N, C) out */, long rows, int channels)
    {
        for (long r = 0; r < rows; r++)
        {
            float* xr = x + r * channels, yr = y + r * channels;
            float max = Elementwise.Max(channels, xr);
            Elementwise.Map(new ExpShiftOp(max), channels, yr, false, xr);
            float sum = Elementwise.Sum(new IdentityOp(), channels, yr);
            Elementwise.Scale(channels, 1f / sum, yr, yr);
        }
    }

    /// <summary>dx += y·(dy - Σ dy·y) per row, from the saved output y.</summary>
    public static void Backward(float* y /* (N, C) */, float* dy /* (N, C) */, float* dx /* (N, C) += */, long rows, int channels)
    {
        for (long r = 0; r < rows; r++)
        {
            float* yr = y + r * channels, dyr = dy + r * channels;
            float dot = Elementwise.Dot(channels, yr, dyr);
            Elementwise.Map(new SoftmaxBackwardOp(dot), channels, dx + r * channels, true, yr, dyr);
        }
    }

    /// <summary>exp(a - shift).</summary>
    internal readonly struct ExpShiftOp(float shift) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => MathF.Exp(a - shift);
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => Vector256.Exp(a - Vector256.Create(shift));
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => FastMath.Exp(a - Vector512.Create(shift));
    }

    internal readonly struct IdentityOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a;
    }

    /// <summary>a = y, b = dy: y·(dy - dot).</summary>
    private readonly struct SoftmaxBackwardOp(float dot) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * (b - dot);
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * (b - Vector256.Create(dot));
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * (b - Vector512.Create(dot));
    }
}

/// <summary>
/// Fused softmax + cross-entropy over the vocabulary, as torch's F.cross_entropy(reduction="mean",
/// ignore_index=-100): the mean of (logsumexp(row) - row[target]) over rows whose target is not
/// <see cref="IgnoreIndex"/>. No probabilities are stored: forward saves one logsumexp per row, and
/// backward recomputes softmax from the logits. When every row is ignored the loss is 0 and the
/// gradient is 0 (torch would give NaN).
/// </summary>
public static unsafe class CrossEntropy
{
    public const int IgnoreIndex = -100;

    /// <summary>Returns the mean loss; writes per-row losses (0 on ignored rows) and logsumexp.</summary>
    public static float Forward(
        float* logits,  // (N, V)
        int* targets,   // (N), values in [0, V) or -100
        float* losses,  // (N) out
        float* lse,     // (N) out, saved for backward
        int rows, int vocab)
    {
        ValidateTargets(targets, rows, vocab);
        var job = new Job { Logits = logits, Targets = targets, Losses = losses, Lse = lse, Rows = rows, Vocab = vocab };
        Parallelism.For(rows, &ForwardRow, &job);
        double sum = 0;
        int count = 0;
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == IgnoreIndex) continue;
            sum += losses[r];
            count++;
        }
        return count == 0 ? 0f : (float)(sum / count);
    }

    /// <summary>Number of rows whose target is not ignored (the mean's denominator).</summary>
    public static int CountTargets(int* targets, int rows)
    {
        int count = 0;
        for (int r = 0; r < rows; r++) if (targets[r] != IgnoreIndex) count++;
        return count;
    }

    /// <summary>
    /// dlogits (+)= (softmax(logits) - onehot(target))·dloss/count. With accumulate false the result
    /// overwrites dlogits, which may then be the logits buffer itself (saves a (N, V) buffer; the
    /// logits are gone afterwards). Ignored rows get 0 (or nothing added).
    /// </summary>
    public static void Backward(
        float* logits,  // (N, V)
        int* targets,   // (N)
        float* lse,     // (N) saved
        float dloss,
        float* dlogits, // (N, V) (+)=, may alias logits when accumulate is false
        int rows, int vocab, bool accumulate)
    {
        int count = CountTargets(targets, rows);
        float scale = count == 0 ? 0f : dloss / count;
        var job = new Job { Logits = logits, Targets = targets, Lse = lse, DLogits = dlogits, Scale = scale, Rows = rows, Vocab = vocab, Accumulate = accumulate };
        Parallelism.For(rows, &BackwardRow, &job);
    }

    /// <summary>
    /// dlogits (+)= (softmax(logits) - onehot(target))·rowScale[r] per row: the backward of per-row losses (or, with
    /// rowScale = -d(log-prob), of per-token log-probabilities) whose upstream gradient differs by row. With accumulate
    /// false the result overwrites dlogits, which may alias the logits. Ignored rows get 0 (or nothing added).
    /// </summary>
    public static void BackwardWeighted(
        float* logits,   // (N, V)
        int* targets,    // (N)
        float* lse,      // (N) saved
        float* rowScale, // (N)
        float* dlogits,  // (N, V) (+)=, may alias logits when accumulate is false
        int rows, int vocab, bool accumulate)
    {
        var job = new Job { Logits = logits, Targets = targets, Lse = lse, DLogits = dlogits, RowScale = rowScale, Rows = rows, Vocab = vocab, Accumulate = accumulate };
        Parallelism.For(rows, &BackwardRow, &job);
    }

    private struct Job
    {
        public float* Logits, Losses, Lse, DLogits, RowScale;
        public int* Targets;
        public float Scale;
        public int Rows, Vocab;
        public bool Accumulate;
    }

    private static void ForwardRow(int r, void* state)
    {
        var j = (Job*)state;
        float* lr = j->Logits + (long)r * j->Vocab;
        int t = j->Targets[r];
        if (t == IgnoreIndex)
        {
            j->Losses[r] = 0f;
            j->Lse[r] = 0f;
            return;
        }
        float max = Elementwise.Max(j->Vocab, lr);
        float s = max + MathF.Log(Elementwise.Sum(new Softmax.ExpShiftOp(max), j->Vocab, lr));
        j->Lse[r] = s;
        j->Losses[r] = s - lr[t];
    }

    private static void BackwardRow(int r, void* state)
    {
        var j = (Job*)state;
        int vocab = j->Vocab;
        float* lr = j->Logits + (long)r * vocab, dr = j->DLogits + (long)r * vocab;
        int t = j->Targets[r];
        if (t == IgnoreIndex)
        {
            if (!j->Accumulate) new Span<float>(dr, vocab).Clear();
            return;
        }
        float scale = j->RowScale != null ? j->RowScale[r] : j->Scale;
        Elementwise.Map(new ScaledSoftmaxOp(j->Lse[r], scale), vocab, dr, j->Accumulate, lr);
        dr[t] -= scale;
    }

    internal static void ValidateTargets(int* targets, int rows, int vocab)
    {
        for (int r = 0; r < rows; r++)
            if (targets[r] != IgnoreIndex && (uint)targets[r] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(targets), targets[r], $"Target {targets[r]} at row {r} is outside the vocabulary [0, {vocab}) and is not the ignore index {IgnoreIndex}.");
    }

    /// <summary>exp(a - lse)·scale.</summary>
    private readonly struct ScaledSoftmaxOp(float lse, float scale) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => MathF.Exp(a - lse) * scale;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => Vector256.Exp(a - Vector256.Create(lse)) * scale;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => FastMath.Exp(a - Vector512.Create(lse)) * scale;
    }
}
