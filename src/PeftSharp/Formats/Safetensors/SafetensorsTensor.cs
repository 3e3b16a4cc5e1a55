using PeftSharp.Tensors;

namespace PeftSharp.Formats.Safetensors;

/// <summary>
/// One tensor of an open <see cref="SafetensorsFile"/>: its header entry, and zero-copy access to
/// its bytes inside the file's memory mapping. Valid while the file is open.
/// </summary>
public sealed unsafe class SafetensorsTensor
{
    internal SafetensorsTensor(SafetensorsFile file, string name, DType dtype, long[] shape, long dataStart, long dataEnd)
    {
        File = file;
        Name = name;
        DType = dtype;
        Shape = shape;
        DataStart = dataStart;
        DataEnd = dataEnd;
        long count = 1;
        foreach (long d in shape) count *= d;
        ElementCount = count;
    }

    public SafetensorsFile File { get; }
    public string Name { get; }
    public DType DType { get; }

    /// <summary>Row-major shape; empty for a scalar. Do not modify.</summary>
    public long[] Shape { get; }

    /// <summary>Start of the tensor's bytes, relative to the data buffer after the header ("data_offsets"[0]).</summary>
    public long DataStart { get; }

    /// <summary>End (exclusive) of the tensor's bytes, relative to the data buffer ("data_offsets"[1]).</summary>
    public long DataEnd { get; }

    public long ByteLength => DataEnd - DataStart;
    public long ElementCount { get; }
    public int Rank => Shape.Length;

    /// <summary>The tensor's first byte inside the mapping (no copy; may be unaligned for its dtype).</summary>
    public byte* Pointer => File.DataPointer + DataStart;

    /// <summary>The raw little-endian bytes (no copy). Tensors above 2 GiB: use <see cref="Pointer"/>.</summary>
    public ReadOnlySpan<byte> Bytes => ByteLength <= int.MaxValue
        ? new ReadOnlySpan<byte>(Pointer, (int)ByteLength)
        : throw new InvalidOperationException($"Tensor '{Name}' has {ByteLength} bytes, too many for one span; use Pointer.");

    /// <summary>A new float32 array holding the tensor's values, widened from its dtype.</summary>
    public float[] ToFloat32()
    {
        if (ElementCount > Array.MaxLength)
            throw new InvalidOperationException($"Tensor '{Name}' has {ElementCount} elements, too many for one array; use ReadFloat32(float*).");
        var result = GC.AllocateUninitializedArray<float>((int)ElementCount);
        ReadFloat32(result);
        return result;
    }

    /// <summary>Writes the tensor's values as float32 into <paramref name="destination"/> (exactly <see cref="ElementCount"/> long).</summary>
    public void ReadFloat32(Span<float> destination)
    {
        if (destination.Length != ElementCount)
            throw new ArgumentException($"Tensor '{Name}' has {ElementCount} elements; the destination holds {destination.Length}.", nameof(destination));
        fixed (float* d = destination) Widening.ToFloat32(DType, Pointer, d, ElementCount);
    }

    /// <summary>Writes the tensor's <see cref="ElementCount"/> values as float32 at <paramref name="destination"/>.</summary>
    public void ReadFloat32(float* destination) => Widening.ToFloat32(DType, Pointer, destination, ElementCount);

    /// <summary>
    /// Drops the tensor's pages from the process's resident memory (the file stays mapped; reading the tensor again
    /// re-reads them): loaders call it after copying or quantizing a tensor, so a model loaded into f32 or 4 bits
    /// does not also keep the file's pages resident.
    /// </summary>
    public void ReleasePages() => Tensors.PageMemory.DropFilePages(Pointer, ByteLength);

    public override string ToString() => $"{Name} {DType.SafetensorsName()}[{string.Join(", ", Shape)}]";
}
