using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// Register-blocked micro-kernels: C[MR×NR] (+)= Ã·B̃ over one packed depth block, where Ã is an MR-row strip
/// stored depth-major (MR floats per step) and B̃ an NR-column strip (NR floats per step), both from
/// <see cref="GemmPacking"/>. Each keeps the whole C tile in vector registers: a broadcast of Ã times the
/// B̃ vectors, fused multiply-add into the accumulators.
/// </summary>
internal static unsafe class GemmKernels
{
    public const int Vector512Rows = 8;
    public const int Vector512Cols = 48;
    public const int Vector256Rows = 6;
    public const int Vector256Cols = 16;
    public const int ScalarRows = 4;
    public const int ScalarCols = 4;

    /// <summary>8×48: 24 zmm accumulators, 3 B̃ loads and 8 broadcasts per step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Vector512Kernel(float* a, float* b, int kc, float* c, long ldc, bool accumulate)
        => Vector512Kernel(a, b, Vector512Cols, kc, c, ldc, accumulate);

    /// <summary>
    /// The 8×48 kernel reading its 48 columns of B in place, <paramref name="ldb"/> floats from one depth step to the next
    /// (<see cref="GemmFewRows"/>: a product of at most a few row strips, where packing B̃ would cost more than it saves).
    /// The same operations in the same order as the packed kernel, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static void Vector512Kernel(float* a, float* b, long ldb, int kc, float* c, long ldc, bool accumulate)
    {
        var c00 = Vector512<float>.Zero; var c01 = Vector512<float>.Zero; var c02 = Vector512<float>.Zero;
        var c10 = Vector512<float>.Zero; var c11 = Vector512<float>.Zero; var c12 = Vector512<float>.Zero;
        var c20 = Vector512<float>.Zero; var c21 = Vector512<float>.Zero; var c22 = Vector512<float>.Zero;
        var c30 = Vector512<float>.Zero; var c31 = Vector512<float>.Zero; var c32 = Vector512<float>.Zero;
        var c40 = Vector512<float>.Zero; var c41 = Vector512<float>.Zero; var c42 = Vector512<float>.Zero;
        var c50 = Vector512<float>.Zero; var c51 = Vector512<float>.Zero; var c52 = Vector512<float>.Zero;
        var c60 = Vector512<float>.Zero; var c61 = Vector512<float>.Zero; var c62 = Vector512<float>.Zero;
        var c70 = Vector512<float>.Zero; var c71 = Vector512<float>.Zero; var c72 = Vector512<float>.Zero;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b + 0); var b1 = Vector512.Load(b + 16); var b2 = Vector512.Load(b + 32);
            var a0 = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(a0, b0, c00); c01 = Vector512.FusedMultiplyAdd(a0, b1, c01); c02 = Vector512.FusedMultiplyAdd(a0, b2, c02);
            var a1 = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(a1, b0, c10); c11 = Vector512.FusedMultiplyAdd(a1, b1, c11); c12 = Vector512.FusedMultiplyAdd(a1, b2, c12);
            var a2 = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(a2, b0, c20); c21 = Vector512.FusedMultiplyAdd(a2, b1, c21); c22 = Vector512.FusedMultiplyAdd(a2, b2, c22);
            var a3 = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(a3, b0, c30); c31 = Vector512.FusedMultiplyAdd(a3, b1, c31); c32 = Vector512.FusedMultiplyAdd(a3, b2, c32);
            var a4 = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(a4, b0, c40); c41 = Vector512.FusedMultiplyAdd(a4, b1, c41); c42 = Vector512.FusedMultiplyAdd(a4, b2, c42);
            var a5 = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(a5, b0, c50); c51 = Vector512.FusedMultiplyAdd(a5, b1, c51); c52 = Vector512.FusedMultiplyAdd(a5, b2, c52);
            var a6 = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(a6, b0, c60); c61 = Vector512.FusedMultiplyAdd(a6, b1, c61); c62 = Vector512.FusedMultiplyAdd(a6, b2, c62);
            var a7 = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(a7, b0, c70); c71 = Vector512.FusedMultiplyAdd(a7, b1, c71); c72 = Vector512.FusedMultiplyAdd(a7, b2, c72);
            a += 8;
            b += ldb;
        }
        if (accumulate)
        {
            c00 += Vector512.Load(c + 0 * ldc + 0); c01 += Vector512.Load(c + 0 * ldc + 16); c02 += Vector512.Load(c + 0 * ldc + 32);
            c10 += Vector512.Load(c + 1 * ldc + 0); c11 += Vector512.Load(c + 1 * ldc + 16); c12 += Vector512.Load(c + 1 * ldc + 32);
            c20 += Vector512.Load(c + 2 * ldc + 0); c21 += Vector512.Load(c + 2 * ldc + 16); c22 += Vector512.Load(c + 2 * ldc + 32);
            c30 += Vector512.Load(c + 3 * ldc + 0); c31 += Vector512.Load(c + 3 * ldc + 16); c32 += Vector512.Load(c + 3 * ldc + 32);
            c40 += Vector512.Load(c + 4 * ldc + 0); c41 += Vector512.Load(c + 4 * ldc + 16); c42 += Vector512.Load(c + 4 * ldc + 32);
            c50 += Vector512.Load(c + 5 * ldc + 0); c51 += Vector512.Load(c + 5 * ldc + 16); c52 += Vector512.Load(c + 5 * ldc + 32);
            c60 += Vector512.Load(c + 6 * ldc + 0); c61 += Vector512.Load(c + 6 * ldc + 16); c62 += Vector512.Load(c + 6 * ldc + 32);
            c70 += Vector512.Load(c + 7 * ldc + 0); c71 += Vector512.Load(c + 7 * ldc + 16); c72 += Vector512.Load(c + 7 * ldc + 32);
        }
        c00.Store(c + 0 * ldc + 0); c01.Store(c + 0 * ldc + 16); c02.Store(c + 0 * ldc + 32);
        c10.Store(c + 1 * ldc + 0); c11.Store(c + 1 * ldc + 16); c12.Store(c + 1 * ldc + 32);
        c20.Store(c + 2 * ldc + 0); c21.Store(c + 2 * ldc + 16); c22.Store(c + 2 * ldc + 32);
        c30.Store(c + 3 * ldc + 0); c31.Store(c + 3 * ldc + 16); c32.Store(c + 3 * ldc + 32);
        c40.Store(c + 4 * ldc + 0); c41.Store(c + 4 * ldc + 16); c42.Store(c + 4 * ldc + 32);
        c50.Store(c + 5 * ldc + 0); c51.Store(c + 5 * ldc + 16); c52.Store(c + 5 * ldc + 32);
        c60.Store(c + 6 * ldc + 0); c61.Store(c + 6 * ldc + 16); c62.Store(c + 6 * ldc + 32);
        c70.Store(c + 7 * ldc + 0); c71.Store(c + 7 * ldc + 16); c72.Store(c + 7 * ldc + 32);
    }

    /// <summary>6×16: 12 ymm accumulators (fits the 16 AVX2 registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Vector256Kernel(float* a, float* b, int kc, float* c, long ldc, bool accumulate)
    {
        var c00 = Vector256<float>.Zero; var c01 = Vector256<float>.Zero;
        var c10 = Vector256<float>.Zero; var c11 = Vector256<float>.Zero;
        var c20 = Vector256<float>.Zero; var c21 = Vector256<float>.Zero;
        var c30 = Vector256<float>.Zero; var c31 = Vector256<float>.Zero;
        var c40 = Vector256<float>.Zero; var c41 = Vector256<float>.Zero;
        var c50 = Vector256<float>.Zero; var c51 = Vector256<float>.Zero;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b + 0); var b1 = Vector256.Load(b + 8);
            var a0 = Vector256.Create(a[0]); c00 = Vector256.FusedMultiplyAdd(a0, b0, c00); c01 = Vector256.FusedMultiplyAdd(a0, b1, c01);
            var a1 = Vector256.Create(a[1]); c10 = Vector256.FusedMultiplyAdd(a1, b0, c10); c11 = Vector256.FusedMultiplyAdd(a1, b1, c11);
            var a2 = Vector256.Create(a[2]); c20 = Vector256.FusedMultiplyAdd(a2, b0, c20); c21 = Vector256.FusedMultiplyAdd(a2, b1, c21);
            var a3 = Vector256.Create(a[3]); c30 = Vector256.FusedMultiplyAdd(a3, b0, c30); c31 = Vector256.FusedMultiplyAdd(a3, b1, c31);
            var a4 = Vector256.Create(a[4]); c40 = Vector256.FusedMultiplyAdd(a4, b0, c40); c41 = Vector256.FusedMultiplyAdd(a4, b1, c41);
            var a5 = Vector256.Create(a[5]); c50 = Vector256.FusedMultiplyAdd(a5, b0, c50); c51 = Vector256.FusedMultiplyAdd(a5, b1, c51);
            a += 6;
            b += 16;
        }
        if (accumulate)
        {
            c00 += Vector256.Load(c + 0 * ldc + 0); c01 += Vector256.Load(c + 0 * ldc + 8);
            c10 += Vector256.Load(c + 1 * ldc + 0); c11 += Vector256.Load(c + 1 * ldc + 8);
            c20 += Vector256.Load(c + 2 * ldc + 0); c21 += Vector256.Load(c + 2 * ldc + 8);
            c30 += Vector256.Load(c + 3 * ldc + 0); c31 += Vector256.Load(c + 3 * ldc + 8);
            c40 += Vector256.Load(c + 4 * ldc + 0); c41 += Vector256.Load(c + 4 * ldc + 8);
            c50 += Vector256.Load(c + 5 * ldc + 0); c51 += Vector256.Load(c + 5 * ldc + 8);
        }
        c00.Store(c + 0 * ldc + 0); c01.Store(c + 0 * ldc + 8);
        c10.Store(c + 1 * ldc + 0); c11.Store(c + 1 * ldc + 8);
        c20.Store(c + 2 * ldc + 0); c21.Store(c + 2 * ldc + 8);
        c30.Store(c + 3 * ldc + 0); c31.Store(c + 3 * ldc + 8);
        c40.Store(c + 4 * ldc + 0); c41.Store(c + 4 * ldc + 8);
        c50.Store(c + 5 * ldc + 0); c51.Store(c + 5 * ldc + 8);
    }

    /// <summary>4×4 in scalar registers, for hardware without vector acceleration.</summary>
    public static void ScalarKernel(float* a, float* b, int kc, float* c, long ldc, bool accumulate)
    {
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int p = 0; p < kc; p++)
        {
            float b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
            float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
            c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
            c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
            c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
            c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            a += 4;
            b += 4;
        }
        Store(c, accumulate, c00, c01, c02, c03);
        Store(c + ldc, accumulate, c10, c11, c12, c13);
        Store(c + 2 * ldc, accumulate, c20, c21, c22, c23);
        Store(c + 3 * ldc, accumulate, c30, c31, c32, c33);
    }

    private static void Store(float* c, bool accumulate, float v0, float v1, float v2, float v3)
    {
        if (accumulate)
        {
            v0 += c[0]; v1 += c[1]; v2 += c[2]; v3 += c[3];
        }
        c[0] = v0; c[1] = v1; c[2] = v2; c[3] = v3;
    }
}
