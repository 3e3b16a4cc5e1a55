using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// The Vector512 path of <see cref="Attention"/>: blocked flash attention. Queries and keys go in blocks of 64;
/// each block pair is a few small matrix products (<see cref="MatMul"/>, 4 rows × 64 columns in 16 zmm
/// accumulators) on copies padded to a multiple of 16 in the head dimension, with the online softmax applied per
/// row between them. The queries are copied pre-multiplied by the scale. Key blocks past a query block's diagonal
/// are skipped; masks are applied per element only on the diagonal block or when a padding mask or segment ids are
/// given. Forward runs over (batch, head, query block) tasks; backward over (batch, kv head), so each task owns its
/// dK/dV rows and its group's dQ rows.
/// </summary>
internal static unsafe class AttentionBlocked
{
    private const int Block = 64;

    private struct Job
    {
        public float* Q, K, V, O, Lse, DO, DQ, DK, DV;
        public int* Mask, Segments;
        public int Batch, T, H, Hkv, D, Dp, QueryBlocks;
        public float Scale;
    }

    public static void Forward(float* q, float* k, float* v, int* mask, int* segments, float* output, float* lse,
        int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        var job = NewJob(q, k, v, mask, segments, batch, tokens, heads, kvHeads, headDim);
        job.O = output;
        job.Lse = lse;
        Parallelism.For(batch * heads * job.QueryBlocks, &ForwardTask, &job);
    }

    public static void Backward(float* q, float* k, float* v, int* mask, int* segments, float* output, float* lse,
        float* dOutput, float* dq, float* dk, float* dv, int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        if (dq == null && dk == null && dv == null) return;
        var job = NewJob(q, k, v, mask, segments, batch, tokens, heads, kvHeads, headDim);
        job.O = output;
        job.Lse = lse;
        job.DO = dOutput;
        job.DQ = dq;
        job.DK = dk;
        job.DV = dv;
        Parallelism.For(batch * kvHeads, &BackwardTask, &job);
    }

    private static Job NewJob(float* q, float* k, float* v, int* mask, int* segments, int batch, int tokens, int heads, int kvHeads, int headDim) => new()
    {
        Q = q, K = k, V = v, Mask = mask, Segments = segments,
        Batch = batch, T = tokens, H = heads, Hkv = kvHeads, D = headDim, Dp = (headDim + 15) / 16 * 16,
        QueryBlocks = (tokens + Block - 1) / Block, Scale = 1f / MathF.Sqrt(headDim),
    };

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ForwardTask(int task, void* state)
    {
        ref var j = ref *(Job*)state;
        int qb = task % j.QueryBlocks, bh = task / j.QueryBlocks, b = bh / j.H, h = bh % j.H, kvh = h / (j.H / j.Hkv);
        int D = j.D, Dp = j.Dp, t0 = qb * Block, rows = Math.Min(Block, j.T - t0);
        long qStride = (long)j.H * D, kvStride = (long)j.Hkv * D;
        var scratch = Scratch.Current;
        float* qp = scratch.Get(0, Block * Dp), kt = scratch.Get(1, Dp * Block), vp = scratch.Get(2, Block * Dp);
        float* s = scratch.Get(3, Block * Block), acc = scratch.Get(4, Block * Dp), max = scratch.Get(5, Block), sum = scratch.Get(6, Block);
        float* qBase = j.Q + ((long)b * j.T * j.H + h) * D, kBase = j.K + ((long)b * j.T * j.Hkv + kvh) * D, vBase = j.V + ((long)b * j.T * j.Hkv + kvh) * D;

        CopyRows(qBase + t0 * qStride, qStride, rows, D, Dp, j.Scale, qp);
        new Span<float>(acc, Block * Dp).Clear();
        new Span<float>(max, Block).Fill(float.NegativeInfinity);
        new Span<float>(sum, Block).Clear();
        for (int s0 = 0; s0 < t0 + rows; s0 += Block)
        {
            int keys = Math.Min(Block, t0 + rows - s0);
            CopyTransposed(kBase + s0 * kvStride, kvStride, keys, D, kt);
            CopyRows(vBase + s0 * kvStride, kvStride, keys, D, Dp, 1f, vp);
            MatMul(qp, Dp, 1, kt, Block, Block, D, Block, s, Block, accumulate: false);
            Mask(j, b, t0, rows, s0, keys, s);
            for (int r = 0; r < Block; r++)
            {
                float* sr = s + r * Block;
                float blockMax = r < rows ? RowMax(sr) : float.NegativeInfinity;
                if (blockMax == float.NegativeInfinity)
                {
                    new Span<float>(sr, Block).Clear();
                    continue;
                }
                float newMax = MathF.Max(max[r], blockMax);
                float correction = MathF.Exp(max[r] - newMax);
                max[r] = newMax;
                sum[r] = sum[r] * correction + ExpShifted(sr, newMax);
                if (correction != 1f) Elementwise.Scale(Dp, correction, acc + r * Dp, acc + r * Dp);
            }
            MatMul(s, Block, 1, vp, Dp, Block, Block, Dp, acc, Dp, accumulate: true);
        }
        for (int r = 0; r < rows; r++)
        {
            float* o = j.O + (((long)b * j.T + t0 + r) * j.H + h) * D;
            float* l = j.Lse + ((long)b * j.H + h) * j.T + t0 + r;
            if (sum[r] == 0f)
            {
                new Span<float>(o, D).Clear();
                *l = float.NegativeInfinity;
                continue;
            }
            Elementwise.Scale(D, 1f / sum[r], acc + r * Dp, o);
            *l = max[r] + MathF.Log(sum[r]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardTask(int task, void* state)
    {
        ref var j = ref *(Job*)state;
        int b = task / j.Hkv, kvh = task % j.Hkv, group = j.H / j.Hkv;
        int D = j.D, Dp = j.Dp, T = j.T;
        long qStride = (long)j.H * D, kvStride = (long)j.Hkv * D;
        bool needDs = j.DQ != null || j.DK != null;
        var scratch = Scratch.Current;
        float* kt = scratch.Get(0, Dp * Block), kp = scratch.Get(1, Block * Dp), vt = scratch.Get(2, Dp * Block);
        float* qp = scratch.Get(3, Block * Dp), dop = scratch.Get(4, Block * Dp), p = scratch.Get(5, Block * Block);
        float* dp = scratch.Get(6, Block * Block), dqBlock = scratch.Get(7, Block * Dp), dkAcc = scratch.Get(8, Block * Dp);
        float* dvAcc = scratch.Get(9, Block * Dp), rowLse = scratch.Get(10, Block), delta = scratch.Get(11, Block);
        float* kBase = j.K + (long)b * T * kvStride + (long)kvh * D, vBase = j.V + (long)b * T * kvStride + (long)kvh * D;

        for (int s0 = 0; s0 < T; s0 += Block)
        {
            int keys = Math.Min(Block, T - s0);
            CopyTransposed(kBase + s0 * kvStride, kvStride, keys, D, kt);
            CopyRows(kBase + s0 * kvStride, kvStride, keys, D, Dp, 1f, kp);
            CopyTransposed(vBase + s0 * kvStride, kvStride, keys, D, vt);
            new Span<float>(dkAcc, Block * Dp).Clear();
            new Span<float>(dvAcc, Block * Dp).Clear();
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
            {
                float* qBase = j.Q + (long)b * T * qStride + (long)h * D;
                float* oBase = j.O + (long)b * T * qStride + (long)h * D;
                float* doBase = j.DO + (long)b * T * qStride + (long)h * D;
                float* lseBase = j.Lse + ((long)b * j.H + h) * T;
                for (int t0 = s0 / Block * Block; t0 < T; t0 += Block)
                {
                    int rows = Math.Min(Block, T - t0);
                    CopyRows(qBase + t0 * qStride, qStride, rows, D, Dp, j.Scale, qp);
                    CopyRows(doBase + t0 * qStride, qStride, rows, D, Dp, 1f, dop);
                    for (int r = 0; r < Block; r++)
                    {
                        rowLse[r] = r < rows ? lseBase[t0 + r] : float.NegativeInfinity;
                        delta[r] = r < rows && needDs ? Elementwise.Dot(D, doBase + (t0 + r) * qStride, oBase + (t0 + r) * qStride) : 0f;
                    }
                    MatMul(qp, Dp, 1, kt, Block, Block, D, Block, p, Block, accumulate: false);
                    Mask(j, b, t0, rows, s0, keys, p);
                    bool any = false;
                    for (int r = 0; r < Block; r++)
                    {
                        float* pr = p + r * Block;
                        if (rowLse[r] == float.NegativeInfinity) new Span<float>(pr, Block).Clear();
                        else
                        {
                            ExpShifted(pr, rowLse[r]);
                            any = true;
                        }
                    }
                    if (!any) continue;
                    if (j.DV != null) MatMul(p, 1, Block, dop, Dp, Block, Block, Dp, dvAcc, Dp, accumulate: true);
                    if (!needDs) continue;
                    MatMul(dop, Dp, 1, vt, Block, Block, D, Block, dp, Block, accumulate: false);
                    for (int r = 0; r < Block; r++)
                        Elementwise.Map(new SoftmaxGradOp(delta[r]), Block, dp + r * Block, false, p + r * Block, dp + r * Block);
                    if (j.DQ != null)
                    {
                        MatMul(dp, Block, 1, kp, Dp, Block, Block, Dp, dqBlock, Dp, accumulate: false);
                        for (int r = 0; r < rows; r++)
                            Elementwise.Axpy(D, j.Scale, dqBlock + r * Dp, j.DQ + ((long)b * T + t0 + r) * qStride + (long)h * D);
                    }
                    if (j.DK != null) MatMul(dp, 1, Block, qp, Dp, Block, Block, Dp, dkAcc, Dp, accumulate: true);
                }
            }
            for (int c = 0; c < keys; c++)
            {
                long at = ((long)b * T + s0 + c) * kvStride + (long)kvh * D;
                if (j.DK != null) Elementwise.Axpy(D, 1f, dkAcc + c * Dp, j.DK + at);
                if (j.DV != null) Elementwise.Axpy(D, 1f, dvAcc + c * Dp, j.DV + at);
            }
        }
    }

    /// <summary>Sets s[r, c] (query t0 + r, key s0 + c) to −∞ where the key is not visible; rows past <paramref name="rows"/> are left alone.</summary>
    private static void Mask(in Job j, int b, int t0, int rows, int s0, int keys, float* s)
    {
        bool masked = j.Mask != null || j.Segments != null;
        if (!masked && keys == Block && s0 + Block - 1 <= t0) return; // wholly below the diagonal
        for (int r = 0; r < rows; r++)
        {
            int t = t0 + r;
            float* sr = s + r * Block;
            int visible = Math.Clamp(t - s0 + 1, 0, keys);
            for (int c = visible; c < Block; c++) sr[c] = float.NegativeInfinity;
            if (!masked) continue;
            for (int c = 0; c < visible; c++)
                if (!Attention.Visible(j.Mask, j.Segments, b, j.T, t, s0 + c)) sr[c] = float.NegativeInfinity;
        }
    }

    private static float RowMax(float* row)
    {
        var m = Vector512.Max(Vector512.Max(Vector512.Load(row), Vector512.Load(row + 16)), Vector512.Max(Vector512.Load(row + 32), Vector512.Load(row + 48)));
        var m8 = Vector256.Max(m.GetLower(), m.GetUpper());
        var m4 = Vector128.Max(m8.GetLower(), m8.GetUpper());
        return MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
    }

    /// <summary>row[c] = exp(row[c] − shift) over one block row (−∞ → 0, see <see cref="FastMath.Exp"/>); returns the sum.</summary>
    private static float ExpShifted(float* row, float shift)
    {
        var total = Vector512<float>.Zero;
        var shiftV = Vector512.Create(shift);
        for (int c = 0; c < Block; c += 16)
        {
            var x = Vector512.Load(row + c);
            var e = FastMath.Exp(x - shiftV);
            e.Store(row + c);
            total += e;
        }
        return Vector512.Sum(total);
    }

    /// <summary>dst (64 × Dp) = src rows (stride <paramref name="stride"/>, D floats each) × scale, zero-padded to 64 rows and Dp columns.</summary>
    private static void CopyRows(float* src, long stride, int rows, int d, int dp, float scale, float* dst)
    {
        for (int r = 0; r < rows; r++)
        {
            float* o = dst + r * dp;
            if (scale == 1f) new ReadOnlySpan<float>(src + r * stride, d).CopyTo(new Span<float>(o, d));
            else Elementwise.Scale(d, scale, src + r * stride, o);
            for (int c = d; c < dp; c++) o[c] = 0f;
        }
        new Span<float>(dst + rows * dp, (Block - rows) * dp).Clear();
    }

    /// <summary>dst (D × 64) = the transpose of <paramref name="rows"/> source rows of D floats, zero-padded to 64 columns.</summary>
    private static void CopyTransposed(float* src, long stride, int rows, int d, float* dst)
    {
        if (rows < Block) new Span<float>(dst, d * Block).Clear();
        for (int r = 0; r < rows; r++)
        {
            float* row = src + r * stride;
            for (int c = 0; c < d; c++) dst[c * Block + r] = row[c];
        }
    }

    /// <summary>
    /// C (rows × cols, ldc) (+)= A·B with A[i, p] at a[i·rowStride + p·depthStride] (so a transposed A is free) and
    /// B (depth × cols, ldb) row-major. rows is a multiple of 4 and cols of 16.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void MatMul(float* a, long rowStride, long depthStride, float* b, long ldb, int rows, int depth, int cols, float* c, long ldc, bool accumulate)
    {
        for (int i = 0; i < rows; i += 4)
        {
            float* ai = a + i * rowStride;
            float* ci = c + i * ldc;
            int jc = 0;
            for (; jc + 64 <= cols; jc += 64) Kernel4x64(ai, rowStride, depthStride, b + jc, ldb, depth, ci + jc, ldc, accumulate);
            for (; jc < cols; jc += 16) Kernel4x16(ai, rowStride, depthStride, b + jc, ldb, depth, ci + jc, ldc, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x64(float* a, long rs, long ps, float* b, long ldb, int depth, float* c, long ldc, bool accumulate)
    {
        Vector512<float> c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33;
        if (accumulate)
        {
            c00 = Vector512.Load(c); c01 = Vector512.Load(c + 16); c02 = Vector512.Load(c + 32); c03 = Vector512.Load(c + 48);
            c10 = Vector512.Load(c + ldc); c11 = Vector512.Load(c + ldc + 16); c12 = Vector512.Load(c + ldc + 32); c13 = Vector512.Load(c + ldc + 48);
            c20 = Vector512.Load(c + 2 * ldc); c21 = Vector512.Load(c + 2 * ldc + 16); c22 = Vector512.Load(c + 2 * ldc + 32); c23 = Vector512.Load(c + 2 * ldc + 48);
            c30 = Vector512.Load(c + 3 * ldc); c31 = Vector512.Load(c + 3 * ldc + 16); c32 = Vector512.Load(c + 3 * ldc + 32); c33 = Vector512.Load(c + 3 * ldc + 48);
        }
        else
        {
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = Vector512<float>.Zero;
        }
        float* a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs;
        for (int p = 0; p < depth; p++)
        {
            float* bp = b + p * ldb;
            var b0 = Vector512.Load(bp); var b1 = Vector512.Load(bp + 16); var b2 = Vector512.Load(bp + 32); var b3 = Vector512.Load(bp + 48);
            long o = p * ps;
            var x = Vector512.Create(a0[o]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01); c02 = Vector512.FusedMultiplyAdd(x, b2, c02); c03 = Vector512.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a1[o]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11); c12 = Vector512.FusedMultiplyAdd(x, b2, c12); c13 = Vector512.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a2[o]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21); c22 = Vector512.FusedMultiplyAdd(x, b2, c22); c23 = Vector512.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a3[o]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31); c32 = Vector512.FusedMultiplyAdd(x, b2, c32); c33 = Vector512.FusedMultiplyAdd(x, b3, c33);
        }
        c00.Store(c); c01.Store(c + 16); c02.Store(c + 32); c03.Store(c + 48);
        c10.Store(c + ldc); c11.Store(c + ldc + 16); c12.Store(c + ldc + 32); c13.Store(c + ldc + 48);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 16); c22.Store(c + 2 * ldc + 32); c23.Store(c + 2 * ldc + 48);
        c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 16); c32.Store(c + 3 * ldc + 32); c33.Store(c + 3 * ldc + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x16(float* a, long rs, long ps, float* b, long ldb, int depth, float* c, long ldc, bool accumulate)
    {
        Vector512<float> c0, c1, c2, c3;
        if (accumulate)
        {
            c0 = Vector512.Load(c); c1 = Vector512.Load(c + ldc); c2 = Vector512.Load(c + 2 * ldc); c3 = Vector512.Load(c + 3 * ldc);
        }
        else c0 = c1 = c2 = c3 = Vector512<float>.Zero;
        float* a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs;
        for (int p = 0; p < depth; p++)
        {
            var bv = Vector512.Load(b + p * ldb);
            long o = p * ps;
            c0 = Vector512.FusedMultiplyAdd(Vector512.Create(a0[o]), bv, c0);
            c1 = Vector512.FusedMultiplyAdd(Vector512.Create(a1[o]), bv, c1);
            c2 = Vector512.FusedMultiplyAdd(Vector512.Create(a2[o]), bv, c2);
            c3 = Vector512.FusedMultiplyAdd(Vector512.Create(a3[o]), bv, c3);
        }
        c0.Store(c); c1.Store(c + ldc); c2.Store(c + 2 * ldc); c3.Store(c + 3 * ldc);
    }

    /// <summary>a = P, b = dP: P·(dP − Δ).</summary>
    private readonly struct SoftmaxGradOp(float delta) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * (b - delta);
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * (b - Vector256.Create(delta));
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * (b - Vector512.Create(delta));
    }

    /// <summary>Per-thread block buffers, 64-byte aligned, grown on demand and reused.</summary>
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? _current;
        private readonly NativeBuffer<float>?[] _buffers = new NativeBuffer<float>?[12];

        public static Scratch Current => _current ??= new Scratch();

        public float* Get(int slot, long length)
        {
            ref var buffer = ref _buffers[slot];
            if (buffer == null || buffer.Length < length)
            {
                buffer?.Dispose();
                buffer = new NativeBuffer<float>(length, clear: false);
            }
            return buffer.Pointer;
        }
    }
}
