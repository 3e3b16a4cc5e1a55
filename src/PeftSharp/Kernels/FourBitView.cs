using System.Runtime.InteropServices;

namespace PeftSharp.Kernels;

/// <summary>
/// An unmanaged view of a 4-bit (NF4/FP4) matrix for the kernels (the GEMM packing reads it through a
/// pointer): the packed codes, the code table and the absmax, float32 or double-quantized (restored block by block
/// as it is needed, never as a resident float32 copy). Valid while whatever pinned its arrays (Quantization's FourBitPin) lives.
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

    /// <summary>The absmax of <paramref name="block"/>, as bitsandbytes restores it (float32 multiply, then add).</summary>
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
