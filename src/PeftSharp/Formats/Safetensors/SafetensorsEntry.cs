using System.Runtime.InteropServices;
using PeftSharp.Tensors;

namespace PeftSharp.Formats.Safetensors;

/// <summary>
/// A tensor to be written by <see cref="SafetensorsWriter"/>: name, dtype, shape and where its
/// little-endian bytes are (a managed array, native memory, another open safetensors file, or a
/// callback that produces them when the writer reaches the tensor: <see cref="FromWriter"/>).
/// Nothing is copied until the writer streams it to disk.
/// </summary>
public sealed unsafe class SafetensorsEntry
{
    private readonly ReadOnlyMemory<byte> _bytes;
    private readonly float[]? _floats;
    private readonly byte* _pointer;
    private readonly SafetensorsTensor? _source;
    private readonly Action<Stream>? _write;

    private SafetensorsEntry(string name, DType dtype, long[] shape, ReadOnlyMemory<byte> bytes, float[]? floats, byte* pointer,
        SafetensorsTensor? source, Action<Stream>? write = null)
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
        _write = write;
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

    /// <summary>
    /// A tensor computed while it is written: the writer lays out the header from
    /// <see cref="ByteLength"/> (shape × dtype size) first, then calls <paramref name="write"/> once, when
    /// it reaches this tensor, with a stream that takes exactly <see cref="ByteLength"/> little-endian
    /// bytes. So a producer (a merge, a dtype conversion, random init) holds one tensor at a time instead
    /// of the whole model. The callback may write in pieces of any size (e.g. from one scratch buffer it
    /// reuses); writing more or fewer bytes throws <see cref="InvalidOperationException"/> naming the tensor,
    /// and an exception from the callback aborts the file (nothing is left at the target path).
    /// The callback runs each time the entry is written and must not dispose the stream's target (disposing
    /// the stream it is given does nothing).
    /// </summary>
    public static SafetensorsEntry FromWriter(string name, DType dtype, long[] shape, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        return new(name, dtype, shape, default, null, null, null, write);
    }

    internal void WriteTo(Stream stream)
    {
        if (_write != null)
        {
            var counted = new ExactLengthStream(stream, Name, ByteLength);
            _write(counted);
            counted.Finish();
            return;
        }
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

/// <summary>Forwards writes to the file stream and refuses any byte past a lazy tensor's length; <see cref="Finish"/> checks nothing is missing.</summary>
internal sealed class ExactLengthStream(Stream inner, string name, long expected) : Stream
{
    private long _written;

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => _written;
    public override long Position { get => _written; set => throw new NotSupportedException(); }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (buffer.Length > expected - _written)
            throw new InvalidOperationException(
                $"Tensor '{name}': the writer callback wrote {_written + buffer.Length} bytes or more, expected exactly {expected} bytes.");
        inner.Write(buffer);
        _written += buffer.Length;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
    public override void WriteByte(byte value) => Write([value]);
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    public void Finish()
    {
        if (_written != expected)
            throw new InvalidOperationException($"Tensor '{name}': the writer callback wrote {_written} bytes, expected exactly {expected} bytes.");
    }
}
