using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>
/// A small reverse-mode engine over coarse ops.
/// <para>
/// Design: each <see cref="Ops"/> call computes its forward at once into a fresh tensor from the
/// <see cref="Arena"/> and, when some input requires a gradient, records one backward closure on
/// this tape. <see cref="Backward"/> seeds d(loss) = 1 and runs the closures in reverse order;
/// each accumulates (+=) into its inputs' gradients, so fan-in (residuals) needs nothing special.
/// Activation gradients are allocated zeroed from the arena on first use; a node whose output got
/// no gradient is skipped. Parameters carry persistent gradient buffers that keep accumulating
/// across micro-batches until zeroed; frozen parameters have none, and ops never compute their
/// weight gradients. Forward outputs stay in the arena until <see cref="Reset"/>, so backward reads
/// them instead of copies; the only extra saved data are small per-row statistics (norm mean/rstd,
/// attention and cross-entropy logsumexp). Attention recomputes its probabilities in backward.
/// </para>
/// <para>
/// With <see cref="GradEnabled"/> false nothing is recorded (inference); with <see cref="Training"/>
/// false dropout is the identity. Call <see cref="Reset"/> after each step (after the optimizer).
/// </para>
/// </summary>
public sealed unsafe class Tape : IDisposable
{
    private List<Action> _backward = [];
    private List<(Rng Rng, RngState State)>? _drawLog;
    private Queue<(Rng Rng, RngState State)>? _drawReplay;
    private bool _recomputing, _outputUnread;

    /// <summary>
    /// Whether the product about to run may be skipped: a checkpointed body is being recomputed in backward and the model marked
    /// the product's output as one whose values nothing reads (<see cref="UnreadOutput"/>). Its output is then zeros.
    /// </summary>
    internal bool SkipsUnreadProduct => _recomputing && _outputUnread;

    /// <summary>Products skipped so far (<see cref="SkipsUnreadProduct"/>), for tests and profiles.</summary>
    public long SkippedProducts { get; private set; }

    internal void CountSkippedProduct() => SkippedProducts++;

    /// <summary>
    /// Marks, until disposed, the linear layer called inside as one whose output's values no backward step reads: a decoder
    /// layer's last product (down_proj, GPT-2's mlp.c_proj), whose output only enters the residual sum that is the
    /// layer's output. Recomputing a checkpointed layer in backward needs that product's graph but not its values, so the
    /// frozen product is skipped there (about a fifth of the recomputation of a Llama layer). A layer that reads its base
    /// output (DoRA's magnitude) suspends the mark with <see cref="ReadOutput"/>.
    /// </summary>
    internal FlagScope UnreadOutput() => new(this, true);

    /// <summary>Suspends <see cref="UnreadOutput"/> for a product whose output is read (DoRA's base output).</summary>
    internal FlagScope ReadOutput() => new(this, false);

    internal readonly struct FlagScope : IDisposable
    {
        private readonly Tape _tape;
        private readonly bool _previous;

        public FlagScope(Tape tape, bool unread)
        {
            _tape = tape;
            _previous = tape._outputUnread;
            tape._outputUnread = unread;
        }

        public void Dispose() => _tape._outputUnread = _previous;
    }

    public Tape(long arenaFloats = 1 << 20)
    {
        Arena = new Arena(arenaFloats);
    }

    public Arena Arena { get; }
    public bool GradEnabled { get; set; } = true;
    public bool Training { get; set; } = true;

    /// <summary>Number of recorded backward nodes.</summary>
    public int NodeCount => _backward.Count;

    internal Tensor NewTensor(int[] shape, bool requiresGrad, bool clear = false)
    {
        long length = 1;
        foreach (int d in shape) length *= d;
        return new Tensor(shape, Arena.Allocate(length, clear), requiresGrad && GradEnabled);
    }

    internal float* Scratch(long count) => Arena.Allocate(count, clear: false);

    internal bool AnyRequiresGrad(Tensor a, Tensor? b = null, Tensor? c = null)
        => GradEnabled && (a.RequiresGrad || (b?.RequiresGrad ?? false) || (c?.RequiresGrad ?? false));

    internal void Record(Action backward) => _backward.Add(StepProfiler.IsProfiling ? StepProfiler.Attribute(backward) : backward);

    /// <summary>The tensor's gradient buffer, allocated zeroed on first use; null when it needs none.</summary>
    internal float* GradOf(Tensor t)
    {
        if (!t.RequiresGrad) return null;
        var root = t;
        while (root.ViewOf != null) root = root.ViewOf;
        if (root.Grad == null) root.Grad = Arena.Allocate(root.Length, clear: true);
        return t.Grad;
    }

    /// <summary>Backpropagates from a scalar loss (d loss = 1).</summary>
    public void Backward(Tensor loss)
    {
        if (loss.Length != 1) throw new ArgumentException($"Backward needs a scalar loss; got shape {loss.ShapeText}.", nameof(loss));
        if (!loss.RequiresGrad) throw new InvalidOperationException("The loss does not depend on any tensor that requires a gradient.");
        *GradOf(loss) += 1f;
        using var phase = StepProfiler.EnterPhase(StepPhase.Backward);
        for (int i = _backward.Count - 1; i >= 0; i--) _backward[i]();
    }

    /// <summary>
    /// Gradient checkpointing: runs <paramref name="body"/> on <paramref name="input"/> now without
    /// keeping its intermediate activations (they are freed from the arena at once; only the input
    /// and the output stay), and runs it again during backward, on a private sub-graph, to
    /// backpropagate through it. The body must return a tensor of the input's shape (a decoder
    /// layer) and be a pure function of its input and parameters; random draws made through
    /// <see cref="Ops.Dropout"/> are replayed with the same generator states, so the recomputation
    /// sees the same masks.
    /// </summary>
    public Tensor Checkpoint(Tensor input, Func<Tensor, Tensor> body)
    {
        if (!GradEnabled || _drawLog != null || _drawReplay != null) return body(input);
        float* data = Arena.Allocate(input.Length, clear: false);
        var mark = Arena.Mark();
        int nodes = _backward.Count;
        var draws = new List<(Rng Rng, RngState State)>();
        _drawLog = draws;
        Tensor output;
        try
        {
            output = body(new Tensor(input.Shape, input.Data, input.RequiresGrad));
        }
        finally
        {
            _drawLog = null;
        }
        if (!output.Shape.AsSpan().SequenceEqual(input.Shape))
            throw new InvalidOperationException($"A checkpointed body must keep the input's shape {input.ShapeText}; it returned {output.ShapeText}.");
        Buffer.MemoryCopy(output.Data, data, input.Length * sizeof(float), input.Length * sizeof(float));
        bool requiresGrad = output.RequiresGrad;
        _backward.RemoveRange(nodes, _backward.Count - nodes);
        Arena.Release(mark);
        var y = new Tensor(input.Shape, data, requiresGrad);
        if (requiresGrad) Record(() => RecomputeBackward(input, y, body, draws));
        return y;
    }

    private void RecomputeBackward(Tensor input, Tensor y, Func<Tensor, Tensor> body, List<(Rng Rng, RngState State)> draws)
    {
        if (y.Grad == null) return;
        float* dInput = GradOf(input);
        var mark = Arena.Mark();
        var outer = _backward;
        var statesNow = draws.Select(d => (d.Rng, d.Rng.State)).ToArray();
        _backward = [];
        _drawReplay = new Queue<(Rng Rng, RngState State)>(draws);
        try
        {
            var x = new Tensor(input.Shape, input.Data, input.RequiresGrad);
            Tensor output;
            _recomputing = true;
            try
            {
                using (StepProfiler.EnterPhase(StepPhase.Recompute)) output = body(x);
            }
            finally
            {
                _recomputing = false;
            }
            Kernels.Elementwise.Axpy(y.Length, 1f, y.Grad, GradOf(output));
            for (int i = _backward.Count - 1; i >= 0; i--) _backward[i]();
            if (dInput != null && x.Grad != null) Kernels.Elementwise.Axpy(input.Length, 1f, x.Grad, dInput);
        }
        finally
        {
            _backward = outer;
            _drawReplay = null;
            for (int i = statesNow.Length - 1; i >= 0; i--) statesNow[i].Rng.State = statesNow[i].State;
            Arena.Release(mark);
        }
    }

    /// <summary>
    /// Runs the backward nodes recorded since there were <paramref name="nodes"/> at once, newest first, and drops
    /// them: for a part of the graph whose output gradient is already known during forward (a loss chunk).
    /// </summary>
    internal void BackwardNow(int nodes)
    {
        using var phase = StepProfiler.EnterPhase(StepPhase.Backward);
        for (int i = _backward.Count - 1; i >= nodes; i--) _backward[i]();
        _backward.RemoveRange(nodes, _backward.Count - nodes);
    }

    /// <summary>Called by ops before they draw from <paramref name="rng"/>: logs its state inside a checkpointed forward, restores it when recomputing.</summary>
    internal void BeforeRandomDraw(Rng rng)
    {
        if (_drawLog != null) _drawLog.Add((rng, rng.State));
        else if (_drawReplay != null && _drawReplay.TryDequeue(out var draw))
        {
            if (!ReferenceEquals(draw.Rng, rng)) throw new InvalidOperationException("A checkpointed body drew from a different generator on recomputation.");
            rng.State = draw.State;
        }
    }

    /// <summary>Drops the recorded graph and every activation (parameter gradients are kept).</summary>
    public void Reset()
    {
        _backward.Clear();
        Arena.Reset();
    }

    public void Dispose() => Arena.Dispose();
}
