using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// The 4-bit kernels: blockwise quantize (absmax, code, pack two codes a byte with the first element in
/// the high nibble) and dequantize (code → table value · absmax), each with Vector512, Vector256 and
/// scalar paths chosen by <see cref="Simd.Path"/>. Every path computes the same float32 operations, so all
/// agree bit for bit; the scalar one is the oracle.
/// </summary>
internal static unsafe class FourBitKernels
{
    /// <summary>Widens <paramref name="count"/> elements of an F32/F16/BF16 source to float32.</summary>
    public static void ToSingle(DType dtype, void* source, int count, float* destination)
    {
        switch (dtype)
        {
            case DType.F32:
                Buffer.MemoryCopy(source, destination, (long)count * 4, (long)count * 4);
                break;
            case DType.F16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(source, count), new Span<float>(destination, count));
                break;
            case DType.BF16:
                var bits = (ushort*)source;
                int i = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    for (; i + 16 <= count; i += 16)
                    {
                        var v = Vector256.Load(bits + i);
                        (Vector256.WidenLower(v) << 16).AsSingle().Store(destination + i);
                        (Vector256.WidenUpper(v) << 16).AsSingle().Store(destination + i + 8);
                    }
                }
                for (; i < count; i++) ((uint*)destination)[i] = (uint)bits[i] << 16;
                break;
            default:
                throw new ArgumentException($"4-bit quantization takes F32, F16 or BF16 input, not {dtype}.");
        }
    }

    public static float AbsMax(float* x, int count)
    {
        int i = 0;
        float max = 0f;
        if (Simd.Use512)
        {
            var acc = Vector512<float>.Zero;
            for (; i + 16 <= count; i += 16) acc = Vector512.Max(acc, Vector512.Abs(Vector512.Load(x + i)));
            max = MaxAcross(acc.GetLower(), acc.GetUpper());
        }
        else if (Simd.Use256)
        {
            var acc = Vector256<float>.Zero;
            for (; i + 8 <= count; i += 8) acc = Vector256.Max(acc, Vector256.Abs(Vector256.Load(x + i)));
            max = MaxAcross(acc, acc);
        }
        for (; i < count; i++) max = MathF.Max(max, MathF.Abs(x[i]));
        return max;
    }

    private static float MaxAcross(Vector256<float> a, Vector256<float> b)
    {
        var v = Vector256.Max(a, b);
        float max = 0f;
        for (int k = 0; k < 8; k++) max = MathF.Max(max, v.GetElement(k));
        return max;
    }

    /// <summary>
    /// Codes of <paramref name="count"/> values times <paramref name="inverse"/> (1 / absmax), packed from the
    /// high nibble of <paramref name="packed"/>[0]; an odd count leaves the last low nibble as the code of 0.
    /// </summary>
    public static void QuantizeBlock(QuantType type, float* x, int count, float inverse, byte* packed)
    {
        int i = 0;
        if (Simd.Use512 && Avx512F.IsSupported)
        {
            var scale = Vector512.Create(inverse);
            for (; i + 16 <= count; i += 16)
            {
                var codes = Codes512(type, Vector512.Load(x + i) * scale).AsUInt64();
                var bytes = ((codes & Vector512.Create(0xFUL)) << 4) | (codes >> 32);
                *(ulong*)(packed + (i >> 1)) = Avx512F.ConvertToVector128Byte(bytes).AsUInt64().ToScalar();
            }
        }
        else if (Simd.Use256 && Avx2.IsSupported)
        {
            var scale = Vector256.Create(inverse);
            for (; i + 8 <= count; i += 8)
            {
                var codes = Codes256(type, Vector256.Load(x + i) * scale).AsUInt64();
                var bytes = ((codes & Vector256.Create(0xFUL)) << 4) | (codes >> 32);
                byte* p = packed + (i >> 1);
                p[0] = (byte)bytes.GetElement(0);
                p[1] = (byte)bytes.GetElement(1);
                p[2] = (byte)bytes.GetElement(2);
                p[3] = (byte)bytes.GetElement(3);
            }
        }
        for (; i + 1 < count; i += 2)
            packed[i >> 1] = (byte)((FourBitCodes.Quantize(type, x[i] * inverse) << 4) | FourBitCodes.Quantize(type, x[i + 1] * inverse));
        if (i < count)
            packed[i >> 1] = (byte)((FourBitCodes.Quantize(type, x[i] * inverse) << 4) | FourBitCodes.Quantize(type, 0f));
    }

    // The decision trees as branch-free counts: with ascending boundaries t, tree(x) = #{t : x > t}.
    private static Vector512<int> Codes512(QuantType type, Vector512<float> v)
    {
        var count = Vector512<int>.Zero;
        if (type == QuantType.Nf4)
        {
            foreach (float t in FourBitCodes.Nf4Thresholds) count -= Vector512.GreaterThan(v, Vector512.Create(t)).AsInt32();
            return count;
        }
        var magnitude = Vector512.Abs(v);
        foreach (float t in FourBitCodes.Fp4Thresholds) count -= Vector512.GreaterThan(magnitude, Vector512.Create(t)).AsInt32();
        var codes = Avx512F.PermuteVar16x32(Vector512.Create(0, 1, 6, 7, 4, 5, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0), count);
        return codes | (Vector512.LessThan(v, Vector512<float>.Zero).AsInt32() & Vector512.Create(8));
    }

    private static Vector256<int> Codes256(QuantType type, Vector256<float> v)
    {
        var count = Vector256<int>.Zero;
        if (type == QuantType.Nf4)
        {
            foreach (float t in FourBitCodes.Nf4Thresholds) count -= Vector256.GreaterThan(v, Vector256.Create(t)).AsInt32();
            return count;
        }
        var magnitude = Vector256.Abs(v);
        foreach (float t in FourBitCodes.Fp4Thresholds) count -= Vector256.GreaterThan(magnitude, Vector256.Create(t)).AsInt32();
        var codes = Avx2.PermuteVar8x32(Vector256.Create(0, 1, 6, 7, 4, 5, 2, 3), count);
        return codes | (Vector256.LessThan(v, Vector256<float>.Zero).AsInt32() & Vector256.Create(8));
    }

    /// <summary>
    /// Dequantizes <paramref name="count"/> elements of one block starting at an even element: the codes
    /// are the nibbles of <paramref name="packed"/>, high nibble first. Optionally rounds each value to
    /// bfloat16 (round to nearest even) as bitsandbytes does for a bfloat16 compute dtype.
    /// </summary>
    public static void DequantizeSegment(ReadOnlySpan<float> table, byte* packed, int count, float scale, float* destination, bool roundToBFloat16)
    {
        int i = 0;
        if (Simd.Use512 && Avx512F.IsSupported)
        {
            var lut = Vector512.Create(table);
            var s = Vector512.Create(scale);
            for (; i + 32 <= count; i += 32)
            {
                var raw = Vector128.Load(packed + (i >> 1));
                var high = (raw.AsUInt16() >> 4).AsByte() & Vector128.Create((byte)0x0F);
                var low = raw & Vector128.Create((byte)0x0F);
                Store512(Avx512F.PermuteVar16x32(lut, Avx512F.ConvertToVector512Int32(Sse2.UnpackLow(high, low))) * s, destination + i, roundToBFloat16);
                Store512(Avx512F.PermuteVar16x32(lut, Avx512F.ConvertToVector512Int32(Sse2.UnpackHigh(high, low))) * s, destination + i + 16, roundToBFloat16);
            }
            if (i + 16 <= count)
            {
                var raw = Vector128.CreateScalar(*(ulong*)(packed + (i >> 1))).AsByte();
                var high = (raw.AsUInt16() >> 4).AsByte() & Vector128.Create((byte)0x0F);
                var low = raw & Vector128.Create((byte)0x0F);
                Store512(Avx512F.PermuteVar16x32(lut, Avx512F.ConvertToVector512Int32(Sse2.UnpackLow(high, low))) * s, destination + i, roundToBFloat16);
                i += 16;
            }
        }
        else if (Simd.Use256 && Avx2.IsSupported)
        {
            var lutLow = Vector256.Create(table[..8]);
            var lutHigh = Vector256.Create(table[8..]);
            var s = Vector256.Create(scale);
            for (; i + 16 <= count; i += 16)
            {
                var raw = Vector128.CreateScalar(*(ulong*)(packed + (i >> 1))).AsByte();
                var high = (raw.AsUInt16() >> 4).AsByte() & Vector128.Create((byte)0x0F);
                var low = raw & Vector128.Create((byte)0x0F);
                var nibbles = Sse2.UnpackLow(high, low);
                Store256(Lookup256(lutLow, lutHigh, Avx2.ConvertToVector256Int32(nibbles)) * s, destination + i, roundToBFloat16);
                Store256(Lookup256(lutLow, lutHigh, Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(nibbles, 8))) * s, destination + i + 8, roundToBFloat16);
            }
        }
        for (; i + 1 < count; i += 2)
        {
            byte b = packed[i >> 1];
            destination[i] = Round(table[b >> 4] * scale, roundToBFloat16);
            destination[i + 1] = Round(table[b & 0x0F] * scale, roundToBFloat16);
        }
        if (i < count) destination[i] = Round(table[packed[i >> 1] >> 4] * scale, roundToBFloat16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Lookup256(Vector256<float> lutLow, Vector256<float> lutHigh, Vector256<int> index)
    {
        var fromLow = Avx2.PermuteVar8x32(lutLow, index);
        var fromHigh = Avx2.PermuteVar8x32(lutHigh, index);
        return Vector256.ConditionalSelect(Vector256.GreaterThan(index, Vector256.Create(7)).AsSingle(), fromHigh, fromLow);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(Vector512<float> v, float* destination, bool roundToBFloat16)
    {
        if (roundToBFloat16)
        {
            var u = v.AsUInt32();
            v = ((u + Vector512.Create(0x7FFFu) + ((u >> 16) & Vector512<uint>.One)) & Vector512.Create(0xFFFF0000u)).AsSingle();
        }
        v.Store(destination);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256(Vector256<float> v, float* destination, bool roundToBFloat16)
    {
        if (roundToBFloat16)
        {
            var u = v.AsUInt32();
            v = ((u + Vector256.Create(0x7FFFu) + ((u >> 16) & Vector256<uint>.One)) & Vector256.Create(0xFFFF0000u)).AsSingle();
        }
        v.Store(destination);
    }

    /// <summary>Rounds a float32 to the nearest bfloat16 (ties to even) and widens it back.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Round(float value, bool roundToBFloat16)
    {
        if (!roundToBFloat16) return value;
        uint u = BitConverter.SingleToUInt32Bits(value);
        return BitConverter.UInt32BitsToSingle((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
    }
}
