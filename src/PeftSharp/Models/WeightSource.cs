using PeftSharp.Autograd;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>How a parameter is initialized when a model is created without a checkpoint.</summary>
internal enum WeightInit { Normal, Ones, Zeros }

/// <summary>
/// Where a model's weights come from: a safetensors checkpoint (kept open for 16-bit views) or a
/// seeded generator (random initialization, for benchmarks and new models). Checks every tensor's
/// presence and shape against what config.json implies.
/// </summary>
internal sealed unsafe class WeightSource : IDisposable
{
    private const float InitStd = 0.02f;
    private readonly SafetensorsCheckpoint? _checkpoint;
    private readonly Rng? _rng;

    private WeightSource(SafetensorsCheckpoint? checkpoint, Rng? rng, LoadOptions options)
    {
        _checkpoint = checkpoint;
        _rng = rng;
        Options = options;
    }

    public static WeightSource FromCheckpoint(SafetensorsCheckpoint checkpoint, LoadOptions options) => new(checkpoint, null, options);

    public static WeightSource FromRandom(Rng rng, LoadOptions options) => new(null, rng, options);

    public LoadOptions Options { get; }

    /// <summary>An owned f32 parameter; <paramref name="fileShape"/> is the stored shape, transposed (2-d) when <paramref name="transpose"/> (GPT-2 Conv1D).</summary>
    public Parameter Dense(string name, int[] fileShape, WeightInit init, bool transpose = false)
    {
        int[] shape = transpose ? [fileShape[1], fileShape[0]] : fileShape;
        var p = Parameter.Create(name, shape, Options.IsTrainable(name));
        try
        {
            if (_checkpoint == null) Initialize(p, init);
            else if (!transpose)
            {
                var tensor = Find(name, fileShape);
                tensor.ReadFloat32(p.Data);
                tensor.ReleasePages();
            }
            else
            {
                using var stored = new NativeBuffer<float>(p.Length, clear: false);
                var tensor = Find(name, fileShape);
                tensor.ReadFloat32(stored.Pointer);
                tensor.ReleasePages();
                int rows = fileShape[0], cols = fileShape[1];
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < cols; c++)
                        p.Data[(long)c * rows + r] = stored.Pointer[(long)r * cols + c];
            }
        }
        catch
        {
            p.Dispose();
            throw;
        }
        return p;
    }

    private readonly List<NativeBuffer<ushort>> _owned16 = [];

    /// <summary>
    /// A frozen 16-bit matrix [rows, columns]: a view of a BF16/F16 tensor in the file, or with
    /// <see cref="LoadOptions.Weights16"/> an owned copy rounded from another dtype (the file's pages released);
    /// null when it must be f32 (another dtype without Weights16, trainable, Float32, or no checkpoint). A GPT-2
    /// Conv1D weight (<paramref name="transpose"/>, stored [columns, rows]) is only ever an owned copy.
    /// </summary>
    public HalfMatrix? Half(string name, int rows, int columns, bool transpose = false)
    {
        if (_checkpoint == null || Options.Float32 || Options.IsTrainable(name)) return null;
        var t = Find(name, transpose ? [columns, rows] : [rows, columns]);
        var target = Options.Weights16;
        if (!transpose && t.DType is DType.BF16 or DType.F16 && (target == null || target == t.DType))
            return new HalfMatrix(name, rows, columns, (ushort*)t.Pointer, t.DType, t.ReleasePages);
        if (target is not { } type) return null;
        if (type is not (DType.BF16 or DType.F16)) throw new ArgumentException($"LoadOptions.Weights16 must be BF16 or F16, not {type}.");
        var owned = new NativeBuffer<ushort>((long)rows * columns, clear: false);
        _owned16.Add(owned);
        const long chunk = 1 << 20;
        using var wide = new NativeBuffer<float>(transpose ? (long)rows * columns : Math.Min(chunk, (long)rows * columns), clear: false);
        if (transpose)
        {
            t.ReadFloat32(wide.Pointer);
            using var rowMajor = new NativeBuffer<float>((long)rows * columns, clear: false);
            for (long r = 0; r < columns; r++)
                for (long c = 0; c < rows; c++) rowMajor.Pointer[c * columns + r] = wide.Pointer[r * rows + c];
            Narrow(rowMajor.Pointer, owned.Pointer, (long)rows * columns, type);
        }
        else
        {
            int size = t.DType.Size();
            for (long at = 0; at < owned.Length; at += chunk)
            {
                long n = Math.Min(chunk, owned.Length - at);
                Formats.Safetensors.Widening.ToFloat32(t.DType, t.Pointer + at * size, wide.Pointer, n);
                Narrow(wide.Pointer, owned.Pointer + at, n, type);
            }
        }
        t.ReleasePages();
        return new HalfMatrix(name, rows, columns, owned.Pointer, type, owner: owned);
    }

    private static void Narrow(float* source, ushort* destination, long n, DType type)
    {
        if (type == DType.BF16) Kernels.Precision.F32ToBf16(source, destination, n);
        else Kernels.Precision.F32ToF16(source, (Half*)destination, n);
    }

    private SafetensorsTensor Find(string name, int[] expected)
    {
        string shape = "[" + string.Join(", ", expected) + "]";
        if (!_checkpoint!.TryGetTensor(name, out var t))
            throw new PeftSharpException($"{_checkpoint.Path}: tensor '{name}' is missing (config.json implies shape {shape}).");
        if (!t.Shape.AsSpan().SequenceEqual(expected.Select(d => (long)d).ToArray()))
            throw new PeftSharpException($"{t.File.Path}: tensor '{name}' has shape [{string.Join(", ", t.Shape)}] but config.json implies {shape}.");
        return t;
    }

    private void Initialize(Parameter p, WeightInit init)
    {
        var span = new Span<float>(p.Data, checked((int)p.Length));
        switch (init)
        {
            case WeightInit.Normal: _rng!.FillNormal(span, 0f, InitStd); break;
            case WeightInit.Ones: span.Fill(1f); break;
            default: span.Clear(); break;
        }
    }

    public void Dispose()
    {
        _checkpoint?.Dispose();
        foreach (var b in _owned16) b.Dispose();
        _owned16.Clear();
    }
}
