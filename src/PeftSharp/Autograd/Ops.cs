using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>
/// The coarse differentiable ops, bound to one <see cref="Tape"/>. Each runs its kernel's forward
/// now and records the kernel's backward when an input requires a gradient. Shapes: the last
/// dimension is the feature dimension; leading dimensions are flattened into rows.
/// </summary>
public sealed unsafe partial class Ops(Tape tape)
{
    public Tape Tape { get; } = tape;

    /// <summary>
    /// A mixed-adapter batch (PEFT's <c>adapter_names</c>): for each row of the activations, the adapter that row uses
    /// (a null entry: the base model alone). Null: every row uses the layers' active adapters. Inference only; set by
    /// a decoding session around each forward.
    /// </summary>
    public string?[]? RowAdapters { get; set; }

    /// <summary>
    /// Frozen base linears ignore a bf16 compute type (<c>bf16: true</c>) and multiply in f32. Set by a decoding session:
    /// KV-cache decoding is GEMVs bound by reading the weights once, which bf16-rounded operands would not speed up, and
    /// rounded operands would take them off the streaming GEMV onto the packed kernel.
    /// </summary>
    public bool Float32Products { get; set; }

    /// <summary>The compute type a frozen base linear whose own is <paramref name="layerType"/> multiplies in here.</summary>
    public DType ProductType(DType layerType) => Float32Products ? DType.F32 : layerType;

    /// <summary>table[ids[i]] → (ids.Length, C). Also the positional embedding (ids = positions).</summary>
    public Tensor Embedding(int[] ids, Tensor table)
    {
        int c = table.Columns, n = ids.Length;
        var y = Tape.NewTensor([n, c], table.RequiresGrad);
        fixed (int* p = ids) Kernels.Embedding.Forward(p, table.Data, y.Data, n, c, table.Rows, accumulate: false);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                fixed (int* p = ids) Kernels.Embedding.Backward(p, y.Grad, Tape.GradOf(table), n, c);
            });
        return y;
    }

    public Tensor LayerNorm(Tensor x, Tensor weight, Tensor? bias, float eps)
    {
        CheckColumns(x, weight, "LayerNorm weight");
        int rows = x.Rows, c = x.Columns;
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x, weight, bias));
        float* mean = Tape.Scratch(rows), rstd = Tape.Scratch(rows);
        Norms.LayerNormForward(x.Data, weight.Data, bias == null ? null : bias.Data, mean, rstd, y.Data, rows, c, eps);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                Norms.LayerNormBackward(x.Data, weight.Data, mean, rstd, y.Grad,
                    Tape.GradOf(x), Tape.GradOf(weight), bias == null ? null : Tape.GradOf(bias), rows, c);
            });
        return y;
    }

    public Tensor RmsNorm(Tensor x, Tensor weight, float eps)
    {
        CheckColumns(x, weight, "RMSNorm weight");
        int rows = x.Rows, c = x.Columns;
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x, weight));
        float* rstd = Tape.Scratch(rows);
        Norms.RmsNormForward(x.Data, weight.Data, rstd, y.Data, rows, c, eps);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                Norms.RmsNormBackward(x.Data, weight.Data, rstd, y.Grad, Tape.GradOf(x), Tape.GradOf(weight), rows, c);
            });
        return y;
    }

    /// <summary>
    /// y = x·Wᵀ + b with W (out, in) as nn.Linear stores it. Backward runs the input GEMM only when
    /// x needs a gradient and the weight GEMM only when W is trainable.
    /// </summary>
    /// <summary>
    /// y = x·Wᵀ + b. With <paramref name="computeType"/> BF16 (a frozen base under <c>bf16: true</c>) x and W, and in
    /// backward dy and W, are rounded to bf16 for the products (f32 accumulation and results); W must then be frozen,
    /// since no weight gradient is taken from rounded operands.
    /// </summary>
    public Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null, DType computeType = DType.F32)
    {
        if (weight.Shape.Length != 2 || weight.Shape[1] != x.Columns)
            throw new ArgumentException($"Linear: input {x.ShapeText} does not match weight {weight.ShapeText} (expected (out, {x.Columns})).");
        if (bias != null && bias.Length != weight.Shape[0])
            throw new ArgumentException($"Linear: bias {bias.ShapeText} does not match weight {weight.ShapeText}.");
        if (computeType != DType.F32 && weight.RequiresGrad)
            throw new ArgumentException($"Linear: a trainable weight {weight.ShapeText} multiplies in F32, not {computeType}.", nameof(computeType));
        int m = x.Rows, n = weight.Shape[0], k = x.Columns;
        var shape = (int[])x.Shape.Clone();
        shape[^1] = n;
        var y = Tape.NewTensor(shape, Tape.AnyRequiresGrad(x, weight, bias));
        if (Tape.SkipsUnreadProduct) SkipProduct(Tape, y);
        else Gemm.LinearForward(x.Data, weight.Data, bias == null ? null : bias.Data, y.Data, m, n, k, computeType);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                float* dy = y.Grad;
                if (dy == null) return;
                if (x.RequiresGrad) Gemm.LinearBackwardInput(dy, weight.Data, Tape.GradOf(x), m, n, k, accumulate: true, computeType);
                if (weight.RequiresGrad) Gemm.LinearBackwardWeight(dy, x.Data, Tape.GradOf(weight), m, n, k, accumulate: true);
                if (bias != null && bias.RequiresGrad)
                {
                    float* db = Tape.GradOf(bias);
                    for (int i = 0; i < m; i++) Elementwise.Axpy(n, 1f, dy + (long)i * n, db);
                }
            });
        return y;
    }

    /// <summary>A product whose values nothing reads (<see cref="Tape.SkipsUnreadProduct"/>): zeros instead, and counted.</summary>
    internal static void SkipProduct(Tape tape, Tensor y)
    {
        System.Runtime.InteropServices.NativeMemory.Clear(y.Data, (nuint)y.Length * sizeof(float));
        tape.CountSkippedProduct();
    }

    public Tensor Gelu(Tensor x)
    {
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        Activations.GeluForward(x.Data, y.Data, x.Length);
        if (y.RequiresGrad)
            Tape.Record(() => { if (y.Grad != null) Activations.GeluBackward(x.Data, y.Grad, Tape.GradOf(x), x.Length); });
        return y;
    }

    public Tensor Silu(Tensor x)
    {
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        Activations.SiluForward(x.Data, y.Data, x.Length);
        if (y.RequiresGrad)
            Tape.Record(() => { if (y.Grad != null) Activations.SiluBackward(x.Data, y.Grad, Tape.GradOf(x), x.Length); });
        return y;
    }

    /// <summary>silu(gate)·up (Llama's MLP), fused.</summary>
    public Tensor SwiGlu(Tensor gate, Tensor up)
    {
        CheckSameShape(gate, up, "SwiGlu");
        var y = Tape.NewTensor(gate.Shape, Tape.AnyRequiresGrad(gate, up));
        Activations.SwiGluForward(gate.Data, up.Data, y.Data, gate.Length);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad != null) Activations.SwiGluBackward(gate.Data, up.Data, y.Grad, Tape.GradOf(gate), Tape.GradOf(up), gate.Length);
            });
        return y;
    }

    /// <summary>RoPE on x (..., T?, H, D) flattened to (N, H, D) with one position per token (N = positions.Length).</summary>
    public Tensor Rope(Tensor x, int[] positions, RopeCache cache)
    {
        int d = x.Columns, heads = x.Shape[^2], tokens = positions.Length;
        if (d != cache.HeadDim || (long)tokens * heads * d != x.Length)
            throw new ArgumentException($"Rope: input {x.ShapeText} does not match {tokens} positions × heads × head dim {cache.HeadDim}.");
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        fixed (int* p = positions) Kernels.Rope.Forward(x.Data, p, cache.Cos, cache.Sin, y.Data, tokens, heads, d, cache.MaxPositions);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                fixed (int* p = positions) Kernels.Rope.Backward(y.Grad, p, cache.Cos, cache.Sin, Tape.GradOf(x), tokens, heads, d);
            });
        return y;
    }

    /// <summary>
    /// Causal attention: q (B, T, H, D), k and v (B, T, Hkv, D) → (B, T, H, D). attentionMask (B·T,
    /// 1 = token, 0 = padding) and segmentIds (B·T, packed example index) are optional.
    /// </summary>
    public Tensor Attention(Tensor q, Tensor k, Tensor v, int[]? attentionMask = null, int[]? segmentIds = null)
    {
        if (q.Shape.Length != 4 || k.Shape.Length != 4) throw new ArgumentException($"Attention needs 4-d q (B, T, H, D) and k/v (B, T, Hkv, D); got {q.ShapeText} and {k.ShapeText}.");
        CheckSameShape(k, v, "Attention k/v");
        int b = q.Shape[0], t = q.Shape[1], h = q.Shape[2], d = q.Shape[3], hkv = k.Shape[2];
        if (k.Shape[0] != b || k.Shape[1] != t || k.Shape[3] != d)
            throw new ArgumentException($"Attention: k {k.ShapeText} does not match q {q.ShapeText}.");
        if ((attentionMask != null && attentionMask.Length != b * t) || (segmentIds != null && segmentIds.Length != b * t))
            throw new ArgumentException($"Attention: masks must have B·T = {b * t} entries.");
        using var part = StepProfiler.Enter(StepPart.Attention);
        var y = Tape.NewTensor(q.Shape, Tape.AnyRequiresGrad(q, k, v));
        float* lse = Tape.Scratch((long)b * h * t);
        fixed (int* pm = attentionMask, ps = segmentIds)
            Kernels.Attention.Forward(q.Data, k.Data, v.Data, pm, ps, y.Data, lse, b, t, h, hkv, d);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                fixed (int* pm = attentionMask, ps = segmentIds)
                    Kernels.Attention.Backward(q.Data, k.Data, v.Data, pm, ps, y.Data, lse, y.Grad,
                        Tape.GradOf(q), Tape.GradOf(k), Tape.GradOf(v), b, t, h, hkv, d);
            });
        return y;
    }

    /// <summary>Inverted dropout with a mask drawn from <paramref name="rng"/>; the identity when not training or p = 0.</summary>
    public Tensor Dropout(Tensor x, float p, Rng rng)
    {
        if (!Tape.Training || p == 0f) return x;
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        float* mask = Tape.Scratch(x.Length);
        Tape.BeforeRandomDraw(rng);
        Activations.DropoutMask(rng, p, mask, x.Length);
        Activations.ApplyMask(x.Data, mask, y.Data, x.Length, accumulate: false);
        if (y.RequiresGrad)
            Tape.Record(() => { if (y.Grad != null) Activations.ApplyMask(y.Grad, mask, Tape.GradOf(x), x.Length, accumulate: true); });
        return y;
    }

    /// <summary>
    /// x + u with u ~ U(−magnitude, magnitude) drawn from <paramref name="rng"/> in training (NEFTune's noise on the input
    /// embeddings); the noise is a constant of the graph, so dx = dy. Outside training x itself.
    /// </summary>
    public Tensor AddUniformNoise(Tensor x, float magnitude, Rng rng)
    {
        if (!Tape.Training || magnitude == 0f) return x;
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        Tape.BeforeRandomDraw(rng);
        var noise = new Span<float>(y.Data, checked((int)x.Length));
        rng.FillUniform(noise, -magnitude, magnitude);
        Elementwise.Add(x.Length, x.Data, y.Data, y.Data);
        if (y.RequiresGrad)
            Tape.Record(() => { if (y.Grad != null) Elementwise.Axpy(x.Length, 1f, y.Grad, Tape.GradOf(x)); });
        return y;
    }

    /// <summary>a + b (same shape), e.g. a residual.</summary>
    public Tensor Add(Tensor a, Tensor b)
    {
        CheckSameShape(a, b, "Add");
        var y = Tape.NewTensor(a.Shape, Tape.AnyRequiresGrad(a, b));
        Elementwise.Add(a.Length, a.Data, b.Data, y.Data);
        if (y.RequiresGrad)
            Tape.Record(() =>
            {
                if (y.Grad == null) return;
                if (a.RequiresGrad) Elementwise.Axpy(a.Length, 1f, y.Grad, Tape.GradOf(a));
                if (b.RequiresGrad) Elementwise.Axpy(a.Length, 1f, y.Grad, Tape.GradOf(b));
            });
        return y;
    }

    /// <summary>alpha·x (e.g. LoRA's scaling).</summary>
    public Tensor Scale(Tensor x, float alpha)
    {
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        Elementwise.Scale(x.Length, alpha, x.Data, y.Data);
        if (y.RequiresGrad)
            Tape.Record(() => { if (y.Grad != null) Elementwise.Axpy(x.Length, alpha, y.Grad, Tape.GradOf(x)); });
        return y;
    }

    /// <summary>Row-wise softmax over the last dimension.</summary>
    public Tensor Softmax(Tensor x)
    {
        var y = Tape.NewTensor(x.Shape, Tape.AnyRequiresGrad(x));
        Kernels.Softmax.Forward(x.Data, y.Data, x.Rows, x.Columns);
        if (y.RequiresGrad)
            Tape.Record(() => { if (y.Grad != null) Kernels.Softmax.Backward(y.Data, y.Grad, Tape.GradOf(x), x.Rows, x.Columns); });
        return y;
    }

    /// <summary>
    /// Mean cross-entropy of logits (N, V) against targets (N; -100 = ignored) → a scalar tensor.
    /// Backward recomputes softmax from the logits and the saved logsumexp.
    /// </summary>
    /// <param name="overwriteLogits">
    /// Backward writes d(logits) over the logits themselves instead of a second buffer of the same size
    /// (vocab × tokens floats: the largest activation of a language model). Only for a caller that owns
    /// the logits and reads them nowhere else after this op.
    /// </param>
    public Tensor CrossEntropy(Tensor logits, int[] targets, bool overwriteLogits = false)
    {
        int rows = logits.Rows, vocab = logits.Columns;
        if (targets.Length != rows) throw new ArgumentException($"CrossEntropy: {targets.Length} targets for {rows} logit rows.");
        var loss = Tape.NewTensor([1], Tape.AnyRequiresGrad(logits));
        float* losses = Tape.Scratch(rows), lse = Tape.Scratch(rows);
        fixed (int* t = targets) *loss.Data = Kernels.CrossEntropy.Forward(logits.Data, t, losses, lse, rows, vocab);
        if (loss.RequiresGrad)
            Tape.Record(() =>
            {
                if (loss.Grad == null) return;
                bool inPlace = overwriteLogits && logits.RequiresGrad && logits.ViewOf == null && logits.Grad == null;
                if (inPlace) logits.Grad = logits.Data;
                fixed (int* t = targets)
                    Kernels.CrossEntropy.Backward(logits.Data, t, lse, *loss.Grad, Tape.GradOf(logits), rows, vocab, accumulate: !inPlace);
            });
        return loss;
    }

    /// <summary>
    /// CrossEntropy(<paramref name="head"/>(<paramref name="hidden"/>), targets), the mean over non-ignored rows, without
    /// holding the (rows, vocab) logits: each chunk of <paramref name="chunkRows"/> rows gets its logits, its loss and,
    /// since the loss is the graph's end, its logit gradient and its input gradient at once (the head's own backward
    /// runs right away, then the chunk's memory is released); backward only scales the saved input gradient.
    /// The head must hold no trainable parameter (their gradients would be taken before the loss's upstream
    /// gradient is known); the caller falls back to <see cref="CrossEntropy"/> for one that does.
    /// </summary>
    public Tensor CrossEntropyInRowChunks(Tensor hidden, Func<Tensor, Tensor> head, int[] targets, int chunkRows)
    {
        int rows = hidden.Rows, columns = hidden.Columns;
        if (targets.Length != rows) throw new ArgumentException($"CrossEntropyInRowChunks: {targets.Length} targets for {rows} rows.");
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkRows, 1);
        bool grad = Tape.AnyRequiresGrad(hidden);
        var loss = Tape.NewTensor([1], grad);
        float* dHidden = grad ? Tape.Scratch((long)rows * columns) : null;
        int total;
        fixed (int* t = targets) total = Kernels.CrossEntropy.CountTargets(t, rows);
        double sum = 0;
        for (int r0 = 0; r0 < rows; r0 += chunkRows)
        {
            int n = Math.Min(chunkRows, rows - r0);
            var mark = Tape.Arena.Mark();
            int nodes = Tape.NodeCount;
            var x = new Tensor([n, columns], hidden.Data + (long)r0 * columns, grad);
            var logits = head(x);
            if (logits.Rows != n) throw new InvalidOperationException($"The head returned {logits.ShapeText} for {n} rows.");
            int vocab = logits.Columns;
            float* losses = Tape.Scratch(n), lse = Tape.Scratch(n);
            fixed (int* t = targets)
            {
                int* chunkTargets = t + r0;
                Kernels.CrossEntropy.Forward(logits.Data, chunkTargets, losses, lse, n, vocab);
                for (int i = 0; i < n; i++)
                    if (chunkTargets[i] != Kernels.CrossEntropy.IgnoreIndex) sum += losses[i];
                if (grad)
                {
                    using var phase = StepProfiler.EnterPhase(StepPhase.Backward);
                    float* dx = dHidden + (long)r0 * columns;
                    int valid = Kernels.CrossEntropy.CountTargets(chunkTargets, n);
                    if (logits.RequiresGrad && valid > 0)
                    {
                        // Backward divides by the chunk's count: d(chunk mean)·valid/total = d(overall mean).
                        Kernels.CrossEntropy.Backward(logits.Data, chunkTargets, lse, (float)valid / total, logits.Data, n, vocab, accumulate: false);
                        logits.Grad = logits.Data;
                    }
                    Tape.BackwardNow(nodes);
                    if (x.Grad != null) Buffer.MemoryCopy(x.Grad, dx, (long)n * columns * sizeof(float), (long)n * columns * sizeof(float));
                    else new Span<float>(dx, n * columns).Clear();
                }
            }
            if (Tape.NodeCount != nodes) throw new InvalidOperationException("The head recorded backward nodes that did not run.");
            Tape.Arena.Release(mark);
        }
        *loss.Data = total == 0 ? 0f : (float)(sum / total);
        if (grad)
            Tape.Record(() =>
            {
                if (loss.Grad == null) return;
                Elementwise.Axpy((long)rows * columns, *loss.Grad, dHidden, Tape.GradOf(hidden));
            });
        return loss;
    }

    /// <summary>A view with another shape over the same data and gradient (no copy, no node).</summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        var view = new Tensor(shape, x.Data, x.RequiresGrad, x);
        if (view.Length != x.Length) throw new ArgumentException($"Cannot reshape {x.ShapeText} ({x.Length} elements) to [{string.Join(", ", shape)}].");
        return view;
    }

    /// <summary>Splits the last dimension into contiguous copies of the given widths (e.g. GPT-2's fused qkv).</summary>
    public Tensor[] Split(Tensor x, params int[] widths)
    {
        if (widths.Sum() != x.Columns) throw new ArgumentException($"Split widths [{string.Join(", ", widths)}] do not sum to the last dimension of {x.ShapeText}.");
        int rows = x.Rows, c = x.Columns;
        var parts = new Tensor[widths.Length];
        int offset = 0;
        for (int p = 0; p < widths.Length; p++)
        {
            var shape = (int[])x.Shape.Clone();
            int w = widths[p], o = offset;
            shape[^1] = w;
            var y = parts[p] = Tape.NewTensor(shape, Tape.AnyRequiresGrad(x));
            for (int r = 0; r < rows; r++)
                new ReadOnlySpan<float>(x.Data + (long)r * c + o, w).CopyTo(new Span<float>(y.Data + (long)r * w, w));
            if (y.RequiresGrad)
                Tape.Record(() =>
                {
                    if (y.Grad == null) return;
                    float* dx = Tape.GradOf(x);
                    for (int r = 0; r < rows; r++) Elementwise.Axpy(w, 1f, y.Grad + (long)r * w, dx + (long)r * c + o);
                });
            offset += w;
        }
        return parts;
    }

    private static void CheckColumns(Tensor x, Tensor weight, string what)
    {
        if (weight.Length != x.Columns) throw new ArgumentException($"{what} {weight.ShapeText} does not match the last dimension of {x.ShapeText}.");
    }

    private static void CheckSameShape(Tensor a, Tensor b, string what)
    {
        if (!a.Shape.AsSpan().SequenceEqual(b.Shape)) throw new ArgumentException($"{what}: shapes {a.ShapeText} and {b.ShapeText} differ.");
    }
}
