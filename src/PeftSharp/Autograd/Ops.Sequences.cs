using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>
/// Sequence-level ops for preference objectives (DPO, KTO, ORPO, reward models): per-token log-probabilities of given
/// targets, sums by sequence, row gathers, log-sigmoid, and a scalar loss of a small vector whose gradient is given.
/// </summary>
public sealed unsafe partial class Ops
{
    /// <summary>
    /// log softmax(logits)[r, targets[r]] per row → (N); 0 where the target is -100. Backward recomputes softmax from the
    /// logits and the saved logsumexp (the cross-entropy kernel with a per-row weight); with <paramref name="overwriteLogits"/>
    /// d(logits) is written over the logits, as <see cref="CrossEntropy"/> does.
    /// </summary>
    public Tensor TokenLogProbs(Tensor logits, int[] targets, bool overwriteLogits = false)
    {
        int rows = logits.Rows, vocab = logits.Columns;
        if (targets.Length != rows) throw new ArgumentException($"TokenLogProbs: {targets.Length} targets for {rows} logit rows.");
        var y = Tape.NewTensor([rows], Tape.AnyRequiresGrad(logits));
        float* lse = Tape.Scratch(rows);
        fixed (int* t = targets) Kernels.CrossEntropy.Forward(logits.Data, t, y.Data, lse, rows, vocab);
        Elementwise.Scale(rows, -1f, y.Data, y.Data);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                float* weights = Tape.Scratch(rows);
                for (int r = 0; r < rows; r++) weights[r] = -y.Grad[r];
                bool inPlace = overwriteLogits && logits.RequiresGrad && logits.ViewOf == null && logits.Grad == null;
                if (inPlace) logits.Grad = logits.Data;
                fixed (int* t = targets)
                    Kernels.CrossEntropy.BackwardWeighted(logits.Data, t, lse, weights, Tape.GradOf(logits), rows, vocab, accumulate: !inPlace);
            });
        return y;
    }

    /// <summary>
    /// <see cref="TokenLogProbs"/>(<paramref name="head"/>(<paramref name="hidden"/>)) without holding the (rows, vocab) logits:
    /// forward computes a chunk of <paramref name="chunkRows"/> rows' logits at a time, keeps their logsumexp and releases them;
    /// backward computes each chunk's logits again, writes their weighted gradient over them and runs the head's backward for
    /// the chunk. One more head GEMM per chunk than <see cref="CrossEntropyInRowChunks"/> (whose upstream gradient is a single
    /// number known in forward), the same memory. The head must hold no trainable parameter.
    /// </summary>
    public Tensor TokenLogProbsInRowChunks(Tensor hidden, Func<Tensor, Tensor> head, int[] targets, int chunkRows)
    {
        int rows = hidden.Rows, columns = hidden.Columns;
        if (targets.Length != rows) throw new ArgumentException($"TokenLogProbsInRowChunks: {targets.Length} targets for {rows} rows.");
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkRows, 1);
        bool grad = Tape.AnyRequiresGrad(hidden);
        var y = Tape.NewTensor([rows], grad);
        float* lse = Tape.Scratch(rows);
        bool enabled = Tape.GradEnabled;
        Tape.GradEnabled = false;
        try
        {
            for (int r0 = 0; r0 < rows; r0 += chunkRows)
            {
                int n = Math.Min(chunkRows, rows - r0);
                var mark = Tape.Arena.Mark();
                var logits = head(new Tensor([n, columns], hidden.Data + (long)r0 * columns, false));
                if (logits.Rows != n) throw new InvalidOperationException($"The head returned {logits.ShapeText} for {n} rows.");
                fixed (int* t = targets) Kernels.CrossEntropy.Forward(logits.Data, t + r0, y.Data + r0, lse + r0, n, logits.Columns);
                Tape.Arena.Release(mark);
            }
        }
        finally
        {
            Tape.GradEnabled = enabled;
        }
        Elementwise.Scale(rows, -1f, y.Data, y.Data);
        if (grad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                float* dHidden = Tape.GradOf(hidden);
                float* weights = Tape.Scratch(rows);
                for (int r = 0; r < rows; r++) weights[r] = -y.Grad[r];
                for (int r0 = 0; r0 < rows; r0 += chunkRows)
                {
                    int n = Math.Min(chunkRows, rows - r0);
                    var mark = Tape.Arena.Mark();
                    int nodes = Tape.NodeCount;
                    var x = new Tensor([n, columns], hidden.Data + (long)r0 * columns, true);
                    var logits = head(x);
                    fixed (int* t = targets)
                        Kernels.CrossEntropy.BackwardWeighted(logits.Data, t + r0, lse + r0, weights + r0, logits.Data, n, logits.Columns, accumulate: false);
                    logits.Grad = logits.Data;
                    Tape.BackwardNow(nodes);
                    if (x.Grad != null) Elementwise.Axpy((long)n * columns, 1f, x.Grad, dHidden + (long)r0 * columns);
                    Tape.Arena.Release(mark);
                }
            });
        return y;
    }

    /// <summary>y[s] = Σ x[i] over i with segments[i] = s, for s in [0, count); entries with a negative segment are skipped.</summary>
    public Tensor SumBySegment(Tensor x, int[] segments, int count)
    {
        if (segments.Length != x.Length) throw new ArgumentException($"SumBySegment: {segments.Length} segment ids for {x.Length} values.");
        foreach (int s in segments)
            if (s >= count) throw new ArgumentException($"SumBySegment: segment {s} is not below the count {count}.");
        var y = Tape.NewTensor([count], Tape.AnyRequiresGrad(x), clear: true);
        long n = x.Length;
        for (long i = 0; i < n; i++)
            if (segments[i] >= 0) y.Data[segments[i]] += x.Data[i];
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                float* dx = Tape.GradOf(x);
                for (long i = 0; i < n; i++)
                    if (segments[i] >= 0) dx[i] += y.Grad[segments[i]];
            });
        return y;
    }

    /// <summary>Rows <paramref name="rows"/> of x (N, C) → (rows.Length, C) (e.g. the last token of each sequence); backward scatters.</summary>
    public Tensor GatherRows(Tensor x, int[] rows)
    {
        int c = x.Columns, n = x.Rows;
        foreach (int r in rows)
            if ((uint)r >= (uint)n) throw new ArgumentException($"GatherRows: row {r} is outside [0, {n}).");
        var y = Tape.NewTensor([rows.Length, c], Tape.AnyRequiresGrad(x));
        for (int i = 0; i < rows.Length; i++)
            new ReadOnlySpan<float>(x.Data + (long)rows[i] * c, c).CopyTo(new Span<float>(y.Data + (long)i * c, c));
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                float* dx = Tape.GradOf(x);
                for (int i = 0; i < rows.Length; i++) Elementwise.Axpy(c, 1f, y.Grad + (long)i * c, dx + (long)rows[i] * c);
            });
        return y;
    }

    /// <summary>log σ(x) element-wise, computed stably as min(x, 0) − log1p(e^−|x|); d/dx = σ(−x).</summary>
    public Tensor LogSigmoid(Tensor x)
    {
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        long n = x.Length;
        for (long i = 0; i < n; i++) y.Data[i] = (float)PreferenceMath.LogSigmoid(x.Data[i]);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                float* dx = Tape.GradOf(x);
                for (long i = 0; i < n; i++) dx[i] += y.Grad[i] * (float)PreferenceMath.Sigmoid(-x.Data[i]);
            });
        return y;
    }

    /// <summary>
    /// A scalar computed outside the tape from a small vector x (a loss over a batch's sequence log-probs, in double), with
    /// its gradient ∂value/∂x: → a scalar tensor whose backward adds d·gradient to x's gradient.
    /// </summary>
    public Tensor ScalarFunction(Tensor x, double value, double[] gradient)
    {
        if (gradient.Length != x.Length) throw new ArgumentException($"ScalarFunction: {gradient.Length} partial derivatives for {x.Length} values.");
        var y = Tape.NewTensor([1], Tape.AnyRequiresGrad(x));
        *y.Data = (float)value;
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                float* dx = Tape.GradOf(x);
                float d = *y.Grad;
                for (int i = 0; i < gradient.Length; i++) dx[i] += (float)(d * gradient[i]);
            });
        return y;
    }
}

/// <summary>Numerically stable scalar functions the preference losses are written with (double precision).</summary>
public static class PreferenceMath
{
    /// <summary>log σ(x) = min(x, 0) − log1p(e^−|x|) (torch's F.logsigmoid).</summary>
    public static double LogSigmoid(double x) => Math.Min(x, 0) - Log1P(Math.Exp(-Math.Abs(x)));

    /// <summary>log(1 + y), accurate for small y (Goldberg's correction: log(u)·y/(u − 1), u = 1 + y).</summary>
    public static double Log1P(double y)
    {
        double u = 1 + y;
        return u == 1 ? y : Math.Log(u) * y / (u - 1);
    }

    /// <summary>e^a − 1, accurate for small a (Kahan: (u − 1)·a/log u, u = e^a).</summary>
    public static double Expm1(double a)
    {
        double u = Math.Exp(a);
        if (u == 1) return a;
        double um1 = u - 1;
        return um1 == -1 ? -1 : um1 * a / Math.Log(u);
    }

    public static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));
}
