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
    private readonly List<Action> _backward = [];

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

    internal void Record(Action backward) => _backward.Add(backward);

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
        for (int i = _backward.Count - 1; i >= 0; i--) _backward[i]();
    }

    /// <summary>Drops the recorded graph and every activation (parameter gradients are kept).</summary>
    public void Reset()
    {
        _backward.Clear();
        Arena.Reset();
    }

    public void Dispose() => Arena.Dispose();
}
