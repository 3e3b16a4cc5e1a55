using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>
/// A frozen 2-d weight (rows, columns) stored as BF16 or F16 bits in memory owned elsewhere
/// (typically a view of a memory-mapped safetensors file). Never trainable: ops over it compute
/// input gradients only, and widen it panel by panel inside the GEMM instead of copying it.
/// </summary>
public sealed unsafe class HalfMatrix
{
    /// <param name="releasePages">For a view of a file: drops its pages from resident memory (<see cref="ReleasePages"/>).</param>
    /// <param name="owner">For a copy: the memory holding it, freed by <see cref="DisposeOwned"/> unless the matrix is <see cref="Shared"/>.</param>
    public HalfMatrix(string name, int rows, int columns, ushort* data, DType type, Action? releasePages = null, IDisposable? owner = null)
    {
        _releasePages = releasePages;
        _owner = owner;
        if (type is not (DType.BF16 or DType.F16)) throw new ArgumentException($"{name}: a half matrix is BF16 or F16, not {type}.", nameof(type));
        Name = name;
        Rows = rows;
        Columns = columns;
        Data = data;
        DType = type;
    }

    private readonly Action? _releasePages;
    private readonly IDisposable? _owner;

    /// <summary>The memory of an owned copy (null for a view).</summary>
    internal IDisposable? Owner => _owner;

    /// <summary>Used by more than one layer (a tied embedding and output layer): only its model frees it.</summary>
    internal bool Shared { get; set; }

    /// <summary>Frees an owned copy when the one layer using it is disposed (a layer replaced by its 4-bit form).</summary>
    internal void DisposeOwned()
    {
        if (!Shared) _owner?.Dispose();
    }

    public string Name { get; }
    public int Rows { get; }
    public int Columns { get; }
    public ushort* Data { get; }
    public DType DType { get; }
    public long Length => (long)Rows * Columns;
    public string ShapeText => $"[{Rows}, {Columns}]";

    /// <summary>
    /// Once the matrix has been copied or quantized and will not be read again: a view of a file drops its pages
    /// from the process's resident memory; other storage is left alone.
    /// </summary>
    public void ReleasePages() => _releasePages?.Invoke();

    /// <summary>Widens rows [row, row + count) into <paramref name="destination"/> (count × Columns f32).</summary>
    public void WidenRows(long row, long count, float* destination)
    {
        ushort* source = Data + row * Columns;
        if (DType == DType.BF16) Precision.Bf16ToF32(source, destination, count * Columns);
        else Precision.F16ToF32((Half*)source, destination, count * Columns);
    }
}

/// <summary>Ops over <see cref="HalfMatrix"/> weights (frozen 16-bit views).</summary>
public static unsafe class HalfOps
{
    /// <summary>
    /// y = x·Wᵀ + b with W (out, in) in BF16/F16, widened inside the GEMM. Backward computes the
    /// input gradient (and the bias gradient when the bias is trainable), never a weight gradient.
    /// With <paramref name="computeType"/> BF16 (<c>bf16: true</c>) x, dy and W are rounded to bf16 for the products.
    /// </summary>
    public static Tensor Linear(this Ops ops, Tensor x, HalfMatrix weight, Tensor? bias = null, DType computeType = DType.F32)
    {
        if (weight.Columns != x.Columns)
            throw new ArgumentException($"Linear: input {x.ShapeText} does not match weight {weight.Name} {weight.ShapeText} (expected (out, {x.Columns})).");
        if (bias != null && bias.Length != weight.Rows)
            throw new ArgumentException($"Linear: bias {bias.ShapeText} does not match weight {weight.Name} {weight.ShapeText}.");
        var tape = ops.Tape;
        int m = x.Rows, n = weight.Rows, k = x.Columns;
        var shape = (int[])x.Shape.Clone();
        shape[^1] = n;
        var y = tape.NewTensor(shape, tape.AnyRequiresGrad(x, bias));
        if (tape.SkipsUnreadProduct) Ops.SkipProduct(tape, y);
        else Gemm.LinearForward(x.Data, weight.Data, weight.DType, bias == null ? null : bias.Data, y.Data, m, n, k, computeType);
        if (y.RequiresGrad)
            tape.Record(() =>
            {
                float* dy = y.Grad;
                if (dy == null) return;
                if (x.RequiresGrad) Gemm.LinearBackwardInput(dy, weight.Data, weight.DType, tape.GradOf(x), m, n, k, accumulate: true, computeType);
                if (bias != null && bias.RequiresGrad)
                {
                    float* db = tape.GradOf(bias);
                    for (int i = 0; i < m; i++) Elementwise.Axpy(n, 1f, dy + (long)i * n, db);
                }
            });
        return y;
    }

    /// <summary>table[ids[i]] → (ids.Length, C), each row widened on lookup (a frozen table: no gradient).</summary>
    public static Tensor Embedding(this Ops ops, int[] ids, HalfMatrix table)
    {
        int c = table.Columns, n = ids.Length;
        var y = ops.Tape.NewTensor([n, c], requiresGrad: false);
        for (int i = 0; i < n; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)table.Rows)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Index {id} at position {i} is outside the embedding table {table.Name} of {table.Rows} rows.");
            table.WidenRows(id, 1, y.Data + (long)i * c);
        }
        return y;
    }
}
