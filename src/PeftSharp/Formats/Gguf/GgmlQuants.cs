using System.Buffers.Binary;
using PeftSharp.Kernels;

namespace PeftSharp.Formats.Gguf;

/// <summary>
/// Conversion of float32 rows to and from ggml's storage types, as ggml-quants.c's reference
/// (<c>quantize_row_q8_0_ref</c>, <c>quantize_row_q4_0_ref</c>, <c>dequantize_row_*</c>) does:
/// Q8_0 blocks are 32 values as an f16 scale <c>d = max|x| / 127</c> and 32 signed bytes <c>round(x / d)</c>;
/// Q4_0 blocks are an f16 scale <c>d = x_maxabs / -8</c> (the signed value of largest magnitude) and 16 bytes of
/// nibbles <c>min(15, trunc(x / d + 8.5))</c>, value j in the low nibble of byte j and value j + 16 in its high nibble.
/// </summary>
public static class GgmlQuants
{
    public const int QK = 32;

    /// <summary>Writes <paramref name="values"/> as <paramref name="type"/> into <paramref name="destination"/> (its exact byte size).</summary>
    public static unsafe void Quantize(ReadOnlySpan<float> values, GgmlType type, Span<byte> destination)
    {
        long expected = GgmlTypes.ByteSize(type, values.Length, 1);
        if (destination.Length != expected) throw new ArgumentException($"expected {expected} bytes for {values.Length} values as {type}, got {destination.Length}.");
        switch (type)
        {
            case GgmlType.F32:
                System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(destination);
                break;
            case GgmlType.F16:
                fixed (float* s = values) fixed (byte* d = destination) Precision.F32ToF16(s, (Half*)d, values.Length);
                break;
            case GgmlType.BF16:
                fixed (float* s = values) fixed (byte* d = destination) Precision.F32ToBf16(s, (ushort*)d, values.Length);
                break;
            case GgmlType.Q8_0:
                for (int b = 0; b < values.Length / QK; b++) QuantizeQ8_0Block(values.Slice(b * QK, QK), destination.Slice(b * 34, 34));
                break;
            case GgmlType.Q4_0:
                for (int b = 0; b < values.Length / QK; b++) QuantizeQ4_0Block(values.Slice(b * QK, QK), destination.Slice(b * 18, 18));
                break;
            default:
                throw new PeftSharpException($"writing ggml type {GgmlTypes.Name(type)} is not supported (f32, f16, bf16, q8_0 and q4_0 are).");
        }
    }

    /// <summary>Reads <paramref name="source"/> (whole rows of <paramref name="type"/>) as float32 values.</summary>
    public static unsafe void Dequantize(ReadOnlySpan<byte> source, GgmlType type, Span<float> destination)
    {
        long expected = GgmlTypes.ByteSize(type, destination.Length, 1);
        if (source.Length != expected) throw new ArgumentException($"expected {expected} bytes for {destination.Length} values as {type}, got {source.Length}.");
        switch (type)
        {
            case GgmlType.F32:
                System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                break;
            case GgmlType.F16:
                fixed (byte* s = source) fixed (float* d = destination) Precision.F16ToF32((Half*)s, d, destination.Length);
                break;
            case GgmlType.BF16:
                fixed (byte* s = source) fixed (float* d = destination) Precision.Bf16ToF32((ushort*)s, d, destination.Length);
                break;
            case GgmlType.Q8_0:
                for (int b = 0; b < destination.Length / QK; b++)
                {
                    var block = source.Slice(b * 34, 34);
                    float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
                    for (int j = 0; j < QK; j++) destination[b * QK + j] = (sbyte)block[2 + j] * d;
                }
                break;
            case GgmlType.Q4_0:
                for (int b = 0; b < destination.Length / QK; b++)
                {
                    var block = source.Slice(b * 18, 18);
                    float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
                    for (int j = 0; j < QK / 2; j++)
                    {
                        destination[b * QK + j] = ((block[2 + j] & 0x0F) - 8) * d;
                        destination[b * QK + j + QK / 2] = ((block[2 + j] >> 4) - 8) * d;
                    }
                }
                break;
            default:
                throw new PeftSharpException($"reading ggml type {GgmlTypes.Name(type)} as float32 is not supported (f32, f16, bf16, q8_0 and q4_0 are).");
        }
    }

    private static void QuantizeQ8_0Block(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        foreach (float v in x) amax = MathF.Max(amax, MathF.Abs(v));
        float d = amax / 127f;
        float id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
        for (int j = 0; j < QK; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }

    private static void QuantizeQ4_0Block(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
            if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
        float d = max / -8f;
        float id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
        for (int j = 0; j < QK / 2; j++)
        {
            int lo = Math.Min(15, (int)(sbyte)(x[j] * id + 8.5f));
            int hi = Math.Min(15, (int)(sbyte)(x[j + QK / 2] * id + 8.5f));
            block[2 + j] = (byte)(lo | (hi << 4));
        }
    }
}
