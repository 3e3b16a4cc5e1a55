using System.Runtime.InteropServices;
using PeftSharp.Tensors;

namespace PeftSharp.Formats.Safetensors;

/// <summary>
/// A tensor to be written by <see cref="SafetensorsWriter"/>: name, dtype, shape and where its
/// little-endian bytes are (a managed array, native memory, or another open safetensors file).
/// Nothing is copied until the writer streams it to disk.
/// </summary>
public sealed unsafe class SafetensorsEntry
{
    private readonly ReadOnlyMemory<byte> _bytes;
    private readonly float[]? _floats;
    private readonly byte* _pointer;
    private readonly SafetensorsTensor? _source;

    private SafetensorsEntry(string name, DType dtype, long[] shape, ReadOnlyMemory<byte> bytes, float[]? floats, byte* pointer, SafetensorsTensor? source)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentException($"Tensor '{name}': negative dimension in shape [{string.Join(", ", shape)}].", nameof(shape));
            count = checked(count * d);
        }
        Name = name;
        DType = dtype;
        Shape = (long[])shape.Clone();
        ByteLength = checked(count * dtype.Size());
        _bytes = bytes;
        _floats = floats;
        _pointer = pointer;
        _source = source;
    }

    public string Name { get; }
    public DType DType { get; }
    public long[] Shape { get; }
    public long ByteLength { get; }

    /// <summary>Raw little-endian bytes; their length must equal shape × dtype size.</summary>
    public static SafetensorsEntry FromBytes(string name, DType dtype, long[] shape, ReadOnlyMemory<byte> bytes)
    {
        var entry = new SafetensorsEntry(name, dtype, shape, bytes, null, null, null);
        if (entry.ByteLength != bytes.Length)
            throw new ArgumentException($"Tensor '{name}': shape [{string.Join(", ", shape)}] of {dtype.SafetensorsName()} needs {entry.ByteLength} bytes, got {bytes.Length}.", nameof(bytes));
        return entry;
    }

    /// <summary>A float32 tensor backed by <paramref name="values"/> (not copied; do not change it before writing).</summary>
    public static SafetensorsEntry FromFloat32(string name, long[] shape, float[] values)
    {
        var entry = new SafetensorsEntry(name, DType.F32, shape, default, values, null, null);
        if (entry.ByteLength != (long)values.Length * sizeof(float))
            throw new ArgumentException($"Tensor '{name}': shape [{string.Join(", ", shape)}] needs {entry.ByteLength / 4} floats, got {values.Length}.", nameof(values));
        return entry;
    }

    /// <summary>A tensor in native memory (e.g. a <see cref="NativeBuffer{T}"/>); the memory must stay alive until written.</summary>
    public static SafetensorsEntry FromPointer(string name, DType dtype, long[] shape, void* data) =>
        new(name, dtype, shape, default, null, (byte*)data, null);

    /// <summary>A tensor of an open safetensors file, copied as it is (optionally renamed).</summary>
    public static SafetensorsEntry FromTensor(SafetensorsTensor tensor, string? name = null) =>
        new(name ?? tensor.Name, tensor.DType, tensor.Shape, default, null, null, tensor);

    internal void WriteTo(Stream stream)
    {
        if (_floats != null) { stream.Write(MemoryMarshal.AsBytes(_floats.AsSpan())); return; }
        if (_pointer == null && _source == null) { stream.Write(_bytes.Span); return; }
        byte* p = _source != null ? _source.Pointer : _pointer;
        const int Chunk = 1 << 30;
        for (long done = 0; done < ByteLength;)
        {
            int n = (int)Math.Min(Chunk, ByteLength - done);
            stream.Write(new ReadOnlySpan<byte>(p + done, n));
            done += n;
        }
    }
}
