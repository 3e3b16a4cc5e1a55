using System.Buffers.Binary;
using PeftSharp.Kernels;

namespace PeftSharp.Formats.Gguf;

/// <summary>
/// Conversion of float32 rows to and from ggml's storage types, as ggml-quants.c's reference
/// (<c>quantize_row_q8_0_ref</c>, <c>quantize_row_q4_0_ref</c>, <c>dequantize_row_*</c>) does:
/// Q8_0 blocks are 32 values as an f16 scale <c>d = max|x| / 127</c> and 32 signed bytes <c>round(x / d)</c>;
/// Q4_0 blocks are an f16 scale <c>d = x_maxabs / -8</c> (the signed value of largest magnitude) and 16 bytes of
/// nibbles <c>min(15, trunc(x / d + 8.5))</c>, value j in the low nibble of byte j and value j + 16 in its high nibble.
/// Q4_K super-blocks (ggml-common.h's <c>block_q4_K</c>) hold 256 values as eight sub-blocks of 32: an f16 <c>d</c> and
/// <c>dmin</c>, twelve bytes of 6-bit sub-block scales and mins, and 128 bytes of nibbles; a value is
/// <c>d·scale[j]·q − dmin·min[j]</c>. The quantizer here takes each sub-block's range as its scale and min (no search
/// over candidate scales as llama-quantize's <c>make_qkx2_quants</c> does), so it is a little less accurate than
/// llama-quantize's Q4_K, in exactly its layout.
/// </summary>
public static class GgmlQuants
{
    public const int QK = 32;
    public const int QKK = 256;

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
            case GgmlType.Q4_K:
                for (int b = 0; b < values.Length / QKK; b++) QuantizeQ4_KBlock(values.Slice(b * QKK, QKK), destination.Slice(b * 144, 144));
                break;
            default:
                throw new PeftSharpException($"writing ggml type {GgmlTypes.Name(type)} is not supported (f32, f16, bf16, q8_0, q4_0 and q4_k are).");
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
            case GgmlType.Q4_K:
                for (int b = 0; b < destination.Length / QKK; b++) DequantizeQ4_KBlock(source.Slice(b * 144, 144), destination.Slice(b * QKK, QKK));
                break;
            default:
                throw new PeftSharpException($"reading ggml type {GgmlTypes.Name(type)} as float32 is not supported (f32, f16, bf16, q8_0, q4_0 and q4_k are).");
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

    /// <summary>Sub-block <paramref name="j"/>'s 6-bit scale and min from the 12 packed bytes (ggml's get_scale_min_k4).</summary>
    private static (int Scale, int Min) ScaleMinK4(int j, ReadOnlySpan<byte> q) => j < 4
        ? (q[j] & 63, q[j + 4] & 63)
        : ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4));

    private static void DequantizeQ4_KBlock(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = (float)BinaryPrimitives.ReadHalfLittleEndian(block);
        float dmin = (float)BinaryPrimitives.ReadHalfLittleEndian(block[2..]);
        var scales = block.Slice(4, 12);
        var qs = block.Slice(16, 128);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            var (s1, m1) = ScaleMinK4(2 * chunk, scales);
            var (s2, m2) = ScaleMinK4(2 * chunk + 1, scales);
            for (int l = 0; l < 32; l++)
            {
                byte q = qs[chunk * 32 + l];
                y[chunk * 64 + l] = d * s1 * (q & 0xF) - dmin * m1;
                y[chunk * 64 + 32 + l] = d * s2 * (q >> 4) - dmin * m2;
            }
        }
    }

    private static void QuantizeQ4_KBlock(ReadOnlySpan<float> x, Span<byte> block)
    {
        Span<float> scales = stackalloc float[8], mins = stackalloc float[8];
        for (int j = 0; j < 8; j++)
        {
            var sub = x.Slice(j * 32, 32);
            float lo = 0, hi = float.MinValue;
            foreach (float v in sub) { lo = MathF.Min(lo, v); hi = MathF.Max(hi, v); }
            mins[j] = -lo; // a value is scale·q − min, and min ≥ 0: the range always reaches down to 0 or below
            scales[j] = MathF.Max(0, (hi - lo) / 15f);
        }
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++) { maxScale = MathF.Max(maxScale, scales[j]); maxMin = MathF.Max(maxMin, mins[j]); }
        float invScale = maxScale > 0 ? 63f / maxScale : 0, invMin = maxMin > 0 ? 63f / maxMin : 0;
        Span<int> ls = stackalloc int[8], lm = stackalloc int[8];
        for (int j = 0; j < 8; j++)
        {
            // Round the scale up, so that the largest value still fits in 15 steps.
            ls[j] = Math.Min(63, (int)MathF.Ceiling(invScale * scales[j]));
            lm[j] = Math.Min(63, (int)MathF.Round(invMin * mins[j], MidpointRounding.AwayFromZero));
        }
        block.Clear();
        Half dHalf = (Half)(maxScale / 63f), dminHalf = (Half)(maxMin / 63f);
        BinaryPrimitives.WriteHalfLittleEndian(block, dHalf);
        BinaryPrimitives.WriteHalfLittleEndian(block[2..], dminHalf);
        var packed = block.Slice(4, 12);
        for (int j = 0; j < 8; j++)
        {
            if (j < 4)
            {
                packed[j] = (byte)ls[j];
                packed[j + 4] = (byte)lm[j];
            }
            else
            {
                packed[j + 4] = (byte)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
                packed[j - 4] |= (byte)((ls[j] >> 4) << 6);
                packed[j] |= (byte)((lm[j] >> 4) << 6);
            }
        }
        float d = (float)dHalf, dmin = (float)dminHalf;
        var qs = block.Slice(16, 128);
        for (int j = 0; j < 8; j++)
        {
            var (sc, m) = ScaleMinK4(j, packed);
            float step = d * sc, offset = dmin * m;
            float inverse = step > 0 ? 1f / step : 0;
            for (int l = 0; l < 32; l++)
            {
                int q = Math.Clamp((int)MathF.Round((x[j * 32 + l] + offset) * inverse, MidpointRounding.AwayFromZero), 0, 15);
                int at = (j / 2) * 32 + l;
                qs[at] |= (byte)(j % 2 == 0 ? q : q << 4);
            }
        }
    }
}
