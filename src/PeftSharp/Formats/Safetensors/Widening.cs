using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Formats.Safetensors;

/// <summary>
/// Converts raw little-endian tensor bytes of any safetensors dtype to float32. Half and double
/// go through TensorPrimitives' vectorized conversions; bfloat16 is the upper half of a float32,
/// so widening it is a zero-extension and a 16-bit shift.
/// </summary>
public static class Widening
{
    /// <summary>Converts <paramref name="count"/> elements of <paramref name="dtype"/> at <paramref name="source"/> into <paramref name="destination"/>.</summary>
    public static unsafe void ToFloat32(DType dtype, byte* source, float* destination, long count)
    {
        const int Chunk = 1 << 28;
        int size = dtype.Size();
        for (long done = 0; done < count;)
        {
            int n = (int)Math.Min(Chunk, count - done);
            ToFloat32(dtype, new ReadOnlySpan<byte>(source + done * size, n * size), new Span<float>(destination + done, n));
            done += n;
        }
    }

    /// <summary>Converts the elements in <paramref name="source"/> (raw bytes of <paramref name="dtype"/>) into <paramref name="destination"/>, which must hold exactly that many floats.</summary>
    public static void ToFloat32(DType dtype, ReadOnlySpan<byte> source, Span<float> destination)
    {
        if (source.Length != destination.Length * dtype.Size())
            throw new ArgumentException($"{source.Length} bytes of {dtype.SafetensorsName()} do not make {destination.Length} elements.", nameof(destination));
        switch (dtype)
        {
            case DType.F32: MemoryMarshal.Cast<byte, float>(source).CopyTo(destination); break;
            case DType.F16: TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source), destination); break;
            case DType.BF16: BFloat16ToFloat32(MemoryMarshal.Cast<byte, ushort>(source), destination); break;
            case DType.F64: TensorPrimitives.ConvertTruncating<double, float>(MemoryMarshal.Cast<byte, double>(source), destination); break;
            case DType.I64: TensorPrimitives.ConvertTruncating<long, float>(MemoryMarshal.Cast<byte, long>(source), destination); break;
            case DType.I32: TensorPrimitives.ConvertTruncating<int, float>(MemoryMarshal.Cast<byte, int>(source), destination); break;
            case DType.I16: TensorPrimitives.ConvertTruncating<short, float>(MemoryMarshal.Cast<byte, short>(source), destination); break;
            case DType.I8: TensorPrimitives.ConvertTruncating<sbyte, float>(MemoryMarshal.Cast<byte, sbyte>(source), destination); break;
            case DType.U8: TensorPrimitives.ConvertTruncating<byte, float>(source, destination); break;
            case DType.Bool:
                for (int i = 0; i < source.Length; i++) destination[i] = source[i] != 0 ? 1f : 0f;
                break;
            default: throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null);
        }
    }

    /// <summary>bfloat16 → float32: each value's 16 bits become the high half of a float32.</summary>
    public static void BFloat16ToFloat32(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("Destination is shorter than the source.", nameof(destination));
        ref ushort src = ref MemoryMarshal.GetReference(source);
        ref uint dst = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(destination));
        int n = source.Length, i = 0;
        if (Simd.Use512)
        {
            for (; i <= n - Vector512<ushort>.Count; i += Vector512<ushort>.Count)
            {
                var (lo, hi) = Vector512.Widen(Vector512.LoadUnsafe(ref src, (nuint)i));
                Vector512.ShiftLeft(lo, 16).StoreUnsafe(ref dst, (nuint)i);
                Vector512.ShiftLeft(hi, 16).StoreUnsafe(ref dst, (nuint)(i + Vector512<uint>.Count));
            }
        }
        else if (Simd.Use256)
        {
            for (; i <= n - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref src, (nuint)i));
                Vector256.ShiftLeft(lo, 16).StoreUnsafe(ref dst, (nuint)i);
                Vector256.ShiftLeft(hi, 16).StoreUnsafe(ref dst, (nuint)(i + Vector256<uint>.Count));
            }
        }
        for (; i < n; i++) Unsafe.Add(ref dst, i) = (uint)Unsafe.Add(ref src, i) << 16;
    }
}
