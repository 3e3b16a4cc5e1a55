using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// Widening bf16/f16 → f32 and narrowing f32 → bf16/f16 (round to nearest even). bf16 is passed
/// as its raw bits (ushort). The f16 paths use TensorPrimitives' vectorized conversions (their own
/// dispatch) unless the scalar path is forced.
/// </summary>
public static unsafe class Precision
{
    public static void Bf16ToF32(ushort* source /* (n) */, float* destination /* (n) out */, long n)
    {
        long i = 0;
        if (Simd.Use512)
        {
            for (; i <= n - 32; i += 32)
            {
                var (lo, hi) = Vector512.Widen(Vector512.Load(source + i));
                Vector512.ShiftLeft(lo, 16).AsSingle().Store(destination + i);
                Vector512.ShiftLeft(hi, 16).AsSingle().Store(destination + i + 16);
            }
        }
        else if (Simd.Use256)
        {
            for (; i <= n - 16; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(source + i));
                Vector256.ShiftLeft(lo, 16).AsSingle().Store(destination + i);
                Vector256.ShiftLeft(hi, 16).AsSingle().Store(destination + i + 8);
            }
        }
        for (; i < n; i++) destination[i] = Bf16ToF32(source[i]);
    }

    public static void F32ToBf16(float* source /* (n) */, ushort* destination /* (n) out */, long n)
    {
        long i = 0;
        if (Simd.Use512)
        {
            for (; i <= n - 32; i += 32)
                Vector512.Narrow(RoundToBf16(Vector512.Load(source + i)), RoundToBf16(Vector512.Load(source + i + 16))).Store(destination + i);
        }
        else if (Simd.Use256)
        {
            for (; i <= n - 16; i += 16)
                Vector256.Narrow(RoundToBf16(Vector256.Load(source + i)), RoundToBf16(Vector256.Load(source + i + 8))).Store(destination + i);
        }
        for (; i < n; i++) destination[i] = F32ToBf16(source[i]);
    }

    public static void F16ToF32(Half* source /* (n) */, float* destination /* (n) out */, long n)
    {
        for (long i = 0; i < n; i += int.MaxValue)
        {
            int count = (int)Math.Min(int.MaxValue, n - i);
            if (Simd.Path == SimdPath.Scalar)
                for (int j = 0; j < count; j++) destination[i + j] = (float)source[i + j];
            else
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(source + i, count), new Span<float>(destination + i, count));
        }
    }

    public static void F32ToF16(float* source /* (n) */, Half* destination /* (n) out */, long n)
    {
        for (long i = 0; i < n; i += int.MaxValue)
        {
            int count = (int)Math.Min(int.MaxValue, n - i);
            if (Simd.Path == SimdPath.Scalar)
                for (int j = 0; j < count; j++) destination[i + j] = (Half)source[i + j];
            else
                TensorPrimitives.ConvertToHalf(new ReadOnlySpan<float>(source + i, count), new Span<Half>(destination + i, count));
        }
    }

    public static float Bf16ToF32(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Round to nearest even; NaN stays a (quiet) NaN.</summary>
    public static ushort F32ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>
    /// f32 bits plus the round-to-nearest-even increment of bf16: the upper 16 bits are then the rounded bf16 (NaN not
    /// special-cased), the lower 16 are to be masked or shifted away. The GEMM's bf16 packing shares it.
    /// </summary>
    internal static uint RoundBf16Bits(uint u) => u + 0x7FFFu + ((u >> 16) & 1u);

    internal static Vector512<uint> RoundBf16Bits(Vector512<uint> u) => u + Vector512.Create(0x7FFFu) + ((u >> 16) & Vector512<uint>.One);

    internal static Vector256<uint> RoundBf16Bits(Vector256<uint> u) => u + Vector256.Create(0x7FFFu) + ((u >> 16) & Vector256<uint>.One);

    private static Vector512<uint> RoundToBf16(Vector512<float> x)
    {
        var bits = x.AsUInt32();
        var rounded = Vector512.ShiftRightLogical(bits + Vector512.Create(0x7FFFu) + (Vector512.ShiftRightLogical(bits, 16) & Vector512<uint>.One), 16);
        var nan = Vector512.ShiftRightLogical(bits, 16) | Vector512.Create(0x40u);
        return Vector512.ConditionalSelect(Vector512.Equals(x, x).AsUInt32(), rounded, nan);
    }

    private static Vector256<uint> RoundToBf16(Vector256<float> x)
    {
        var bits = x.AsUInt32();
        var rounded = Vector256.ShiftRightLogical(bits + Vector256.Create(0x7FFFu) + (Vector256.ShiftRightLogical(bits, 16) & Vector256<uint>.One), 16);
        var nan = Vector256.ShiftRightLogical(bits, 16) | Vector256.Create(0x40u);
        return Vector256.ConditionalSelect(Vector256.Equals(x, x).AsUInt32(), rounded, nan);
    }
}
