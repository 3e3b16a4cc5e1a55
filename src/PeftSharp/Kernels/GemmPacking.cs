using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// One GEMM operand as the packing routines read it: logical element (row, col) is
/// <c>Trans ? data[col·Ld + row] : data[row·Ld + col]</c>, stored as F32, BF16 or F16, or as 4-bit codes
/// (<see cref="FourBit"/> set; the stored matrix is the view's Rows × Columns, Type is U8).
/// Half-precision sources are widened and 4-bit ones dequantized to f32 while packing, one panel at a time.
/// With <see cref="RoundTo"/> BF16 or F16 every packed value is then rounded to that type (a bf16/f16 compute dtype).
/// </summary>
internal readonly unsafe struct GemmOperand(void* data, long ld, bool trans, DType type, DType roundTo = DType.F32, FourBitView* fourBit = null)
{
    public readonly void* Data = data;
    public readonly long Ld = ld;
    public readonly bool Trans = trans;
    public readonly DType Type = type;
    public readonly DType RoundTo = roundTo;
    public readonly FourBitView* FourBit = fourBit;

    public static GemmOperand F32(float* data, long ld, bool trans) => new(data, ld, trans, DType.F32);

    /// <summary>A 4-bit matrix (stored Rows × Columns) dequantized while packing and rounded to <paramref name="roundTo"/>.</summary>
    public static GemmOperand FourBitMatrix(FourBitView* view, bool trans, DType roundTo) =>
        new(view->Packed, view->Columns, trans, DType.U8, roundTo, view);

    /// <summary>The same storage read as the transposed matrix.</summary>
    public GemmOperand Transposed => new(Data, Ld, !Trans, Type, RoundTo, FourBit);

    /// <summary>The same operand with its packed values rounded to <paramref name="type"/> (F32: unchanged).</summary>
    public GemmOperand RoundedTo(DType type) => new(Data, Ld, Trans, Type, type, FourBit);

    /// <summary>Address of stored row <paramref name="row"/>, column <paramref name="col"/> (storage coordinates, not logical; not for 4-bit).</summary>
    public void* At(long row, long col) => (byte*)Data + (row * Ld + col) * (Type == DType.F32 ? 4 : 2);

    public float this[int row, int col] => Trans ? Load(At(col, row)) : Load(At(row, col));

    private float Load(void* p) => Type switch
    {
        DType.F32 => *(float*)p,
        DType.BF16 => BitConverter.Int32BitsToSingle(*(ushort*)p << 16),
        _ => (float)BitConverter.UInt16BitsToHalf(*(ushort*)p),
    };
}

/// <summary>
/// Packs a block of an operand into contiguous strips for the micro-kernels. The block is read with B's
/// convention (depth p = logical row, strip index j = logical column): strip s holds columns
/// [s·width, s·width + width) as <c>depth</c> consecutive groups of <c>width</c> floats, zero-padded at the edge.
/// A is packed by passing its transposed view. Both storage orders are handled here, so no transposed copy of
/// any operand is ever made.
/// </summary>
internal static unsafe class GemmPacking
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    /// <remarks>With <paramref name="pairs"/> (operands rounded to bf16 only) each strip is then rounded and rewritten pair-packed for <see cref="Bf16Dot"/>.</remarks>
    public static void Pack(in GemmOperand src, int p0, int depth, int j0, int count, int width, float* dst, float* scratch, bool pairs = false)
    {
        for (int s = 0; s < count; s += width, dst += (long)depth * width)
        {
            int w = Math.Min(width, count - s);
            if (src.FourBit != null && src.Trans && pairs && Simd.Use512 && Avx512F.IsSupported)
            {
                PackStripTransposedFourBitPairs(src, p0, depth, j0 + s, w, width, dst);
                continue;
            }
            if (src.FourBit != null)
            {
                if (src.Trans) PackStripTransposedFourBit(src, p0, depth, j0 + s, w, width, dst);
                else PackStripRowsFourBit(src, p0, depth, j0 + s, w, width, dst);
            }
            else if (src.Trans) PackStripTransposed(src, p0, depth, j0 + s, w, width, dst, scratch);
            else PackStripRows(src, p0, depth, j0 + s, w, width, dst);
            if (pairs) Bf16Dot.ToPairs(dst, depth, width); // rounds to bf16 itself
            else if (src.RoundTo != DType.F32) Round(dst, (long)depth * width, src.RoundTo);
        }
    }

    /// <summary>4-bit, logical rows are stored rows: each depth step dequantizes w consecutive codes of one row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackStripRowsFourBit(in GemmOperand src, int p0, int depth, int j, int w, int width, float* dst)
    {
        var view = src.FourBit;
        long start = (long)p0 * view->Columns + j;
        for (int p = 0; p < depth; p++, dst += width, start += view->Columns)
        {
            view->Dequantize(start, w, dst);
            for (int t = w; t < width; t++) dst[t] = 0;
        }
    }

    /// <summary>
    /// 4-bit, logical columns are stored rows: up to 16 rows' depth-long segments are dequantized into a scratch
    /// block (16 × depth) and transposed into the strip, through registers when 16 are full and Vector512 is on.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackStripTransposedFourBit(in GemmOperand src, int p0, int depth, int j, int w, int width, float* dst)
    {
        var view = src.FourBit;
        if (w < width)
            for (int p = 0; p < depth; p++)
                for (int t = w; t < width; t++) dst[(long)p * width + t] = 0;
        float* block = GemmScratch.Current.Dequant(16L * depth);
        for (int jj = 0; jj < w; jj += 16)
        {
            int rows = Math.Min(16, w - jj);
            for (int r = 0; r < rows; r++)
                view->Dequantize((j + jj + r) * view->Columns + p0, depth, block + (long)r * depth);
            if (rows == 16 && Simd.Use512)
            {
                Transpose16(GemmOperand.F32(block, depth, true), 0, depth, 0, width, dst + jj);
                continue;
            }
            for (int r = 0; r < rows; r++)
            {
                float* row = block + (long)r * depth, d = dst + jj + r;
                for (int p = 0; p < depth; p++, d += width) *d = row[p];
            }
        }
    }

    /// <summary>
    /// The transposed 4-bit strip straight to <see cref="Bf16Dot"/>'s pairs (a forward product's dequantized W with bf16
    /// compute): each of 16 rows' depth segment is dequantized rounded to bf16 and narrowed in place to 16-bit values, so a
    /// row is ⌈depth/2⌉ pair words (depths 2q and 2q + 1, the even one low), and a 16×16 transpose of those words writes the
    /// pair-packed strip. The same words as dequantizing to f32, transposing and <see cref="Bf16Dot.ToPairs"/> (the same
    /// round to nearest even), with one pass instead of two over the strip and half the bytes through the transpose.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackStripTransposedFourBitPairs(in GemmOperand src, int p0, int depth, int j, int w, int width, float* dst)
    {
        var view = src.FourBit;
        int half = (depth + 1) / 2;
        uint* words = (uint*)dst;
        if (w < width)
            for (int q = 0; q < half; q++)
                for (int t = w; t < width; t++) words[(long)q * width + t] = 0;
        // Rows of depth + 1 floats: room for the odd depth's zero pad after narrowing (2·(depth + 1) ≥ depth + 1 halves).
        long stride = depth + 1;
        float* block = GemmScratch.Current.Dequant(16L * stride);
        for (int jj = 0; jj < w; jj += 16)
        {
            int rows = Math.Min(16, w - jj);
            for (int r = 0; r < rows; r++)
            {
                float* row = block + r * stride;
                view->Dequantize((j + jj + r) * view->Columns + p0, depth, row, roundToBFloat16: true);
                NarrowToBf16(row, depth);
            }
            if (rows == 16)
            {
                Transpose16(GemmOperand.F32(block, stride, true), 0, half, 0, width, (float*)words + jj);
                continue;
            }
            for (int r = 0; r < rows; r++)
            {
                uint* row = (uint*)(block + r * stride), d = words + jj + r;
                for (int q = 0; q < half; q++, d += width) *d = row[q];
            }
        }
    }

    /// <summary>
    /// Rewrites n f32 values already rounded to bf16 as n 16-bit values in place (the high halves; exact), then a zero half when n
    /// is odd, so the row reads as ⌈n/2⌉ little-endian pair words. Writing never passes reading: value i goes to byte 2i.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void NarrowToBf16(float* values, int n)
    {
        uint* source = (uint*)values;
        ushort* target = (ushort*)values;
        int i = 0;
        for (; i + 16 <= n; i += 16)
            Avx512F.ConvertToVector256UInt16(Vector512.Load(source + i) >> 16).Store(target + i);
        for (; i < n; i++) target[i] = (ushort)(source[i] >> 16);
        if ((n & 1) != 0) target[n] = 0;
    }

    /// <summary>Rounds n packed values in place to bfloat16 or float16 (round to nearest even), kept as f32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Round(float* values, long n, DType type)
    {
        if (type == DType.BF16)
        {
            long i = 0;
            if (Simd.Use512)
                for (; i + 16 <= n; i += 16)
                {
                    (Precision.RoundBf16Bits(Vector512.Load((uint*)values + i)) & Vector512.Create(0xFFFF0000u)).Store((uint*)values + i);
                }
            else if (Simd.Use256)
                for (; i + 8 <= n; i += 8)
                {
                    (Precision.RoundBf16Bits(Vector256.Load((uint*)values + i)) & Vector256.Create(0xFFFF0000u)).Store((uint*)values + i);
                }
            for (; i < n; i++)
            {
                ((uint*)values)[i] = Precision.RoundBf16Bits(((uint*)values)[i]) & 0xFFFF0000u;
            }
            return;
        }
        if (type != DType.F16) throw new ArgumentOutOfRangeException(nameof(type), type, "GEMM operands round to BF16 or F16.");
        if (Simd.Path == SimdPath.Scalar)
        {
            for (long i = 0; i < n; i++) values[i] = (float)(Half)values[i];
            return;
        }
        Half* half = stackalloc Half[256];
        for (long i = 0; i < n; i += 256)
        {
            int count = (int)Math.Min(256, n - i);
            var chunk = new Span<float>(values + i, count);
            TensorPrimitives.ConvertToHalf(chunk, new Span<Half>(half, count));
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(half, count), chunk);
        }
    }

    /// <summary>Logical rows are stored rows: each depth step copies (widens) w contiguous elements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackStripRows(in GemmOperand src, int p0, int depth, int j, int w, int width, float* dst)
    {
        if (src.Type == DType.F32 && w == width && Simd.Use512 && width % 16 == 0)
        {
            float* s = (float*)src.At(p0, j);
            for (int p = 0; p < depth; p++, dst += width, s += src.Ld)
                for (int t = 0; t < width; t += 16) Vector512.Load(s + t).Store(dst + t);
            return;
        }
        if (src.Type == DType.F32 && w == 8 && width == 8 && Simd.Use512)
        {
            // The 8-row Ã strip of A stored transposed (the TN form: a weight gradient's Xᵀ): one 8-wide row per depth step.
            float* s = (float*)src.At(p0, j);
            for (int p = 0; p < depth; p++, dst += 8, s += src.Ld) Vector256.Load(s).Store(dst);
            return;
        }
        for (int p = 0; p < depth; p++, dst += width)
        {
            Widen(src.At(p0 + p, j), src.Type, dst, w);
            for (int t = w; t < width; t++) dst[t] = 0;
        }
    }

    /// <summary>Logical columns are stored rows: each of the w columns is read contiguously and scattered down the strip.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackStripTransposed(in GemmOperand src, int p0, int depth, int j, int w, int width, float* dst, float* scratch)
    {
        if (w < width)
            for (int p = 0; p < depth; p++)
                for (int t = w; t < width; t++) dst[(long)p * width + t] = 0;
        int jj = 0;
        if (Simd.Use512 && src.Type == DType.F32)
        {
            for (; jj + 16 <= w; jj += 16) Transpose16(src, p0, depth, j + jj, width, dst + jj);
            // The micro-kernel's 8-row Ã strips (A stored row-major: the NN and NT forms).
            if (jj == 0 && w == 8 && width == 8 && Avx.IsSupported)
            {
                Transpose8(src, p0, depth, j, dst);
                return;
            }
        }
        for (; jj < w; jj++)
        {
            float* row;
            if (src.Type == DType.F32) row = (float*)src.At(j + jj, p0);
            else
            {
                Widen(src.At(j + jj, p0), src.Type, scratch, depth);
                row = scratch;
            }
            float* d = dst + jj;
            for (int p = 0; p < depth; p++, d += width) *d = row[p];
        }
    }

    /// <summary>16 stored rows (logical columns j..j+15) to 16 strip lanes, 16 depth steps at a time through registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose16(in GemmOperand src, int p0, int depth, int j, int width, float* dst)
    {
        float* s0 = (float*)src.At(j, p0);
        long ld = src.Ld;
        var r = stackalloc Vector512<float>[16];
        int p = 0;
        for (; p + 16 <= depth; p += 16)
        {
            for (int t = 0; t < 16; t++) r[t] = Vector512.Load(s0 + t * ld + p);
            for (int level = 0, b = 8; b > 0; level++, b >>= 1)
            {
                var keep = SwapLow[level];
                var take = SwapHigh[level];
                for (int t = 0; t < 16; t++)
                {
                    if ((t & b) != 0) continue;
                    var x = r[t];
                    var y = r[t + b];
                    r[t] = Avx512F.PermuteVar16x32x2(x, keep, y);
                    r[t + b] = Avx512F.PermuteVar16x32x2(x, take, y);
                }
            }
            float* d = dst + (long)p * width;
            for (int t = 0; t < 16; t++) r[t].Store(d + (long)t * width);
        }
        for (; p < depth; p++)
        {
            float* d = dst + (long)p * width;
            for (int t = 0; t < 16; t++) d[t] = s0[t * ld + p];
        }
    }

    /// <summary>
    /// 8 stored rows (logical columns j..j+7) to an 8-wide strip, 8 depth steps at a time through an 8×8 register transpose
    /// (the Ã strip of the 8-row micro-kernel; element by element it cost a fifth of a two-thread product's time).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose8(in GemmOperand src, int p0, int depth, int j, float* dst)
    {
        float* s0 = (float*)src.At(j, p0);
        long ld = src.Ld;
        int p = 0;
        for (; p + 8 <= depth; p += 8, dst += 64)
        {
            float* s = s0 + p;
            var r0 = Avx.LoadVector256(s);
            var r1 = Avx.LoadVector256(s + ld);
            var r2 = Avx.LoadVector256(s + 2 * ld);
            var r3 = Avx.LoadVector256(s + 3 * ld);
            var r4 = Avx.LoadVector256(s + 4 * ld);
            var r5 = Avx.LoadVector256(s + 5 * ld);
            var r6 = Avx.LoadVector256(s + 6 * ld);
            var r7 = Avx.LoadVector256(s + 7 * ld);
            // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves: column q of the 8 rows in register q.
            var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
            var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
            var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
            var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
            var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
            var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
            var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
            var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
            Avx.Store(dst, Avx.Permute2x128(u0, u4, 0x20));
            Avx.Store(dst + 8, Avx.Permute2x128(u1, u5, 0x20));
            Avx.Store(dst + 16, Avx.Permute2x128(u2, u6, 0x20));
            Avx.Store(dst + 24, Avx.Permute2x128(u3, u7, 0x20));
            Avx.Store(dst + 32, Avx.Permute2x128(u0, u4, 0x31));
            Avx.Store(dst + 40, Avx.Permute2x128(u1, u5, 0x31));
            Avx.Store(dst + 48, Avx.Permute2x128(u2, u6, 0x31));
            Avx.Store(dst + 56, Avx.Permute2x128(u3, u7, 0x31));
        }
        for (; p < depth; p++, dst += 8)
            for (int t = 0; t < 8; t++) dst[t] = s0[t * ld + p];
    }

    // Transposing 16×16 by swapping the off-diagonal b×b blocks for b = 8, 4, 2, 1: for rows x (bit b clear) and
    // y = x + b, lanes with bit b set in x take y's lanes b lower; lanes with bit b clear in y take x's lanes b higher.
    private static readonly Vector512<int>[] SwapLow = [SwapIndex(8, false), SwapIndex(4, false), SwapIndex(2, false), SwapIndex(1, false)];
    private static readonly Vector512<int>[] SwapHigh = [SwapIndex(8, true), SwapIndex(4, true), SwapIndex(2, true), SwapIndex(1, true)];

    private static Vector512<int> SwapIndex(int b, bool high)
    {
        Span<int> index = stackalloc int[16];
        for (int l = 0; l < 16; l++)
        {
            bool set = (l & b) != 0;
            index[l] = high
                ? (set ? 16 + l : l + b)
                : (set ? 16 + l - b : l);
        }
        return Vector512.Create((ReadOnlySpan<int>)index);
    }

    /// <summary>Copies n elements to f32: a plain copy, bf16 as a 16-bit left shift, f16 through the hardware conversion.</summary>
    public static void Widen(void* src, DType type, float* dst, int n)
    {
        switch (type)
        {
            case DType.F32:
                Buffer.MemoryCopy(src, dst, (long)n * 4, (long)n * 4);
                break;
            case DType.BF16:
                WidenBFloat16((ushort*)src, dst, n);
                break;
            case DType.F16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, n), new Span<float>(dst, n));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, "GEMM operands are F32, BF16 or F16.");
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WidenBFloat16(ushort* src, float* dst, int n)
    {
        int i = 0;
        if (Simd.Use512)
        {
            for (; i + 32 <= n; i += 32)
            {
                var (lo, hi) = Vector512.Widen(Vector512.Load(src + i));
                Vector512.ShiftLeft(lo, 16).AsSingle().Store(dst + i);
                Vector512.ShiftLeft(hi, 16).AsSingle().Store(dst + i + 16);
            }
        }
        else if (Simd.Use256)
        {
            for (; i + 16 <= n; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(src + i));
                Vector256.ShiftLeft(lo, 16).AsSingle().Store(dst + i);
                Vector256.ShiftLeft(hi, 16).AsSingle().Store(dst + i + 8);
            }
        }
        for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(src[i] << 16);
    }
}
