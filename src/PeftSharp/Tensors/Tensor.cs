
namespace PeftSharp.Tensors;

/// <summary>
/// A shape and a pointer to f32 data, row-major and contiguous. Activations live in the tape's
/// arena (valid until <see cref="Autograd.Tape.Reset"/>); their gradient is allocated on first use during
/// backward. A view (<see cref="Autograd.Ops.Reshape"/>) shares its base's data and gradient.
/// </summary>
public unsafe class Tensor
{
    private float* _grad;

    internal Tensor(int[] shape, float* data, bool requiresGrad, Tensor? viewOf = null)
    {
        Shape = shape;
        Data = data;
        RequiresGrad = requiresGrad;
        ViewOf = viewOf;
        long length = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentOutOfRangeException(nameof(shape), $"Negative dimension in shape [{string.Join(", ", shape)}].");
            length *= d;
        }
        Length = length;
    }

    public int[] Shape { get; }
    public long Length { get; }
    public float* Data { get; }
    public bool RequiresGrad { get; }

    /// <summary>The tensor whose memory this view shares, or null.</summary>
    public Tensor? ViewOf { get; }

    /// <summary>The gradient buffer (same shape), or null while none has been allocated.</summary>
    public float* Grad
    {
        get => ViewOf != null ? ViewOf.Grad : _grad;
        internal set
        {
            if (ViewOf != null) throw new InvalidOperationException("A view's gradient is its base's.");
            _grad = value;
        }
    }

    /// <summary>The last dimension (features per row).</summary>
    public int Columns => Shape[^1];

    /// <summary>Number of rows when viewed as (Length / Columns, Columns).</summary>
    public int Rows => checked((int)(Length / Columns));

    public Span<float> AsSpan() => new(Data, checked((int)Length));

    public Span<float> GradSpan() => Grad == null ? Span<float>.Empty : new Span<float>(Grad, checked((int)Length));

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A named model weight. It owns its value (or views memory owned elsewhere, e.g. a memory-mapped
/// file) and, only when <see cref="Tensor.RequiresGrad"/>, a persistent gradient buffer that
/// accumulates across micro-batches until <see cref="ZeroGrad"/>. Frozen parameters get no
/// gradient buffer and no weight-gradient work.
/// </summary>
public sealed unsafe class Parameter : Tensor, IDisposable
{
    private readonly NativeBuffer<float>? _value;
    private readonly NativeBuffer<float>? _gradient;

    private Parameter(string name, int[] shape, NativeBuffer<float>? value, float* data, bool requiresGrad)
        : base(shape, data, requiresGrad)
    {
        Name = name;
        _value = value;
        if (requiresGrad)
        {
            _gradient = new NativeBuffer<float>(Length);
            Grad = _gradient.Pointer;
        }
    }

    public string Name { get; }

    /// <summary>A zero-initialized parameter that owns its memory.</summary>
    public static Parameter Create(string name, int[] shape, bool requiresGrad)
    {
        long length = 1;
        foreach (int d in shape) length *= d;
        var value = new NativeBuffer<float>(length);
        return new Parameter(name, shape, value, value.Pointer, requiresGrad);
    }

    /// <summary>A parameter over memory it does not own (kept alive and freed by the caller).</summary>
    public static Parameter View(string name, int[] shape, float* data, bool requiresGrad)
        => new(name, shape, null, data, requiresGrad);

    public void ZeroGrad() => _gradient?.Clear();

    public void Dispose()
    {
        _value?.Dispose();
        _gradient?.Dispose();
    }

    public override string ToString() => $"{Name} {ShapeText}{(RequiresGrad ? " trainable" : " frozen")}";
}
