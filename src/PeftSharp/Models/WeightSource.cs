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

    /// <summary>A view of a frozen BF16/F16 matrix in the file, or null when it must be f32 (another dtype, trainable, Float32, or no checkpoint).</summary>
    public HalfMatrix? Half(string name, int rows, int columns)
    {
        if (_checkpoint == null || Options.Float32 || Options.IsTrainable(name)) return null;
        var t = Find(name, [rows, columns]);
        return t.DType is DType.BF16 or DType.F16 ? new HalfMatrix(name, rows, columns, (ushort*)t.Pointer, t.DType, t.ReleasePages) : null;
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

    public void Dispose() => _checkpoint?.Dispose();
}
