using System.Runtime.InteropServices;

namespace PeftSharp.Quantization;

/// <summary>
/// An unmanaged view of a <see cref="Quantized4BitTensor"/> for the kernels (the GEMM packing reads it through a
/// pointer): the packed codes, the code table and the absmax, float32 or double-quantized (restored block by block
/// as it is needed, never as a resident float32 copy). Valid while the <see cref="FourBitPin"/> that made it lives.
/// </summary>
internal unsafe struct FourBitView
{
    public byte* Packed;
    public float* Table;
    /// <summary>float32 absmax per block, or null when double-quantized.</summary>
    public float* Absmax;
    public byte* QuantizedAbsmax;
    public float* NestedAbsmax;
    public float* NestedCode;
    public int NestedBlockSize;
    public float Offset;
    public int BlockSize;
    public long Rows, Columns;

    /// <summary>The absmax of <paramref name="block"/>, as <see cref="QuantState.GetAbsmax"/> restores it (float32 multiply, then add).</summary>
    public readonly float BlockScale(long block)
    {
        if (Absmax != null) return Absmax[block];
        float value = NestedCode[QuantizedAbsmax[block]] * NestedAbsmax[block / NestedBlockSize];
        return value + Offset;
    }

    /// <summary>
    /// Dequantizes the flat elements [start, start + count) into <paramref name="destination"/>, a start in the middle
    /// of a byte or a block included; optionally rounding every value to bfloat16.
    /// </summary>
    public readonly void Dequantize(long start, int count, float* destination, bool roundToBFloat16 = false)
    {
        var table = new ReadOnlySpan<float>(Table, 16);
        long end = start + count, e = start;
        while (e < end)
        {
            long block = e / BlockSize;
            long segmentEnd = Math.Min((block + 1) * BlockSize, end);
            float scale = BlockScale(block);
            if ((e & 1) != 0)
            {
                *destination++ = FourBitKernels.Round(table[Packed[e >> 1] & 0x0F] * scale, roundToBFloat16);
                e++;
            }
            int length = (int)(segmentEnd - e);
            if (length > 0)
            {
                FourBitKernels.DequantizeSegment(table, Packed + (e >> 1), length, scale, destination, roundToBFloat16);
                destination += length;
                e = segmentEnd;
            }
        }
    }
}

/// <summary>Pins a 4-bit tensor's managed state arrays for as long as a <see cref="FourBitView"/> of it is in use.</summary>
internal readonly unsafe struct FourBitPin : IDisposable
{
    private static readonly float[] Nf4Table = PinnedTable(QuantType.Nf4);
    private static readonly float[] Fp4Table = PinnedTable(QuantType.Fp4);

    private readonly GCHandle _absmax, _quantizedAbsmax, _nestedAbsmax, _nestedCode;

    public FourBitPin(Quantized4BitTensor tensor)
    {
        var state = tensor.State;
        _absmax = Pin(state.Absmax);
        _quantizedAbsmax = Pin(state.QuantizedAbsmax);
        _nestedAbsmax = Pin(state.Nested?.Absmax);
        _nestedCode = Pin(state.Nested?.Code);
        var table = state.QuantType == QuantType.Nf4 ? Nf4Table : Fp4Table;
        View = new FourBitView
        {
            Packed = tensor.Packed.Pointer,
            Table = (float*)Marshal.UnsafeAddrOfPinnedArrayElement(table, 0),
            Absmax = Address<float>(_absmax),
            QuantizedAbsmax = Address<byte>(_quantizedAbsmax),
            NestedAbsmax = Address<float>(_nestedAbsmax),
            NestedCode = Address<float>(_nestedCode),
            NestedBlockSize = state.Nested?.BlockSize ?? 1,
            Offset = state.Offset,
            BlockSize = state.BlockSize,
            Rows = tensor.Rows,
            Columns = tensor.Columns,
        };
    }

    public FourBitView View { get; }

    public void Dispose()
    {
        Free(_absmax);
        Free(_quantizedAbsmax);
        Free(_nestedAbsmax);
        Free(_nestedCode);
    }

    private static float[] PinnedTable(QuantType type)
    {
        var table = GC.AllocateArray<float>(16, pinned: true);
        FourBitCodes.Table(type).CopyTo(table);
        return table;
    }

    private static GCHandle Pin(Array? array) => array is null || array.Length == 0 ? default : GCHandle.Alloc(array, GCHandleType.Pinned);

    private static T* Address<T>(GCHandle handle) where T : unmanaged =>
        handle.IsAllocated ? (T*)handle.AddrOfPinnedObject() : null;

    private static void Free(GCHandle handle)
    {
        if (handle.IsAllocated) handle.Free();
    }
}
