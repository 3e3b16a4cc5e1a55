using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// An element operator in the TensorPrimitives style: one small readonly struct with a scalar, a
/// Vector256 and a Vector512 body. It sees up to four input streams (a, b, c, d); an operator
/// that needs fewer ignores the rest. Fields on the struct carry per-call scalars (a row's mean,
/// a scale), and the JIT specializes the drivers below for each operator struct.
/// </summary>
public interface IElementOp
{
    float Invoke(float a, float b, float c, float d);
    Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d);
    Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d);
}

/// <summary>
/// The shared drivers: dispatch on <see cref="Simd.Path"/>, run the widest vector body over the
/// bulk and the scalar body over the tail. Unused streams default to <c>a</c> (loaded, ignored).
/// </summary>
public static unsafe class Elementwise
{
    /// <summary>Maps of at least this many elements are split over the kernel threads.</summary>
    private const long ParallelMinElements = 1 << 16;
    private const long ParallelChunk = 1 << 14;

    /// <summary>
    /// dst[i] = op(a[i], b[i], c[i], d[i]), or dst[i] += op(...) with accumulate. dst may alias an input.
    /// Long maps (activations over a whole batch) are split into chunks over the <see cref="Parallelism"/> pool.
    /// </summary>
    public static void Map<TOp>(TOp op, long n, float* dst, bool accumulate, float* a, float* b = null, float* c = null, float* d = null)
        where TOp : struct, IElementOp
    {
        if (b == null) b = a;
        if (c == null) c = a;
        if (d == null) d = a;
        if (n < ParallelMinElements || Parallelism.MaxThreads <= 1)
        {
            MapRange(op, 0, n, dst, accumulate, a, b, c, d);
            return;
        }
        var job = new MapJob<TOp> { Op = op, N = n, Dst = dst, Accumulate = accumulate, A = a, B = b, C = c, D = d };
        Parallelism.For((int)((n + ParallelChunk - 1) / ParallelChunk), &MapChunk<TOp>, Unsafe.AsPointer(ref job));
    }

    private struct MapJob<TOp>
    {
        public TOp Op;
        public long N;
        public float* Dst, A, B, C, D;
        public bool Accumulate;
    }

    private static void MapChunk<TOp>(int chunk, void* state) where TOp : struct, IElementOp
    {
        ref var job = ref Unsafe.AsRef<MapJob<TOp>>(state);
        long i0 = chunk * ParallelChunk, i1 = Math.Min(job.N, i0 + ParallelChunk);
        MapRange(job.Op, i0, i1, job.Dst, job.Accumulate, job.A, job.B, job.C, job.D);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MapRange<TOp>(TOp op, long i, long n, float* dst, bool accumulate, float* a, float* b, float* c, float* d)
        where TOp : struct, IElementOp
    {
        if (Simd.Use512)
        {
            for (; i <= n - 16; i += 16)
            {
                var r = op.Invoke(Vector512.Load(a + i), Vector512.Load(b + i), Vector512.Load(c + i), Vector512.Load(d + i));
                if (accumulate) r += Vector512.Load(dst + i);
                r.Store(dst + i);
            }
        }
        else if (Simd.Use256)
        {
            for (; i <= n - 8; i += 8)
            {
                var r = op.Invoke(Vector256.Load(a + i), Vector256.Load(b + i), Vector256.Load(c + i), Vector256.Load(d + i));
                if (accumulate) r += Vector256.Load(dst + i);
                r.Store(dst + i);
            }
        }
        for (; i < n; i++)
        {
            float r = op.Invoke(a[i], b[i], c[i], d[i]);
            dst[i] = accumulate ? dst[i] + r : r;
        }
    }

    /// <summary>Σ op(a[i], b[i], c[i], d[i]), accumulated in vector lanes then folded.</summary>
    public static float Sum<TOp>(TOp op, long n, float* a, float* b = null, float* c = null, float* d = null)
        where TOp : struct, IElementOp
    {
        if (b == null) b = a;
        if (c == null) c = a;
        if (d == null) d = a;
        long i = 0;
        float sum = 0;
        if (Simd.Use512)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16)
                acc += op.Invoke(Vector512.Load(a + i), Vector512.Load(b + i), Vector512.Load(c + i), Vector512.Load(d + i));
            sum = Vector512.Sum(acc);
        }
        else if (Simd.Use256)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
                acc += op.Invoke(Vector256.Load(a + i), Vector256.Load(b + i), Vector256.Load(c + i), Vector256.Load(d + i));
            sum = Vector256.Sum(acc);
        }
        for (; i < n; i++) sum += op.Invoke(a[i], b[i], c[i], d[i]);
        return sum;
    }

    /// <summary>max a[i] (n ≥ 1); four independent accumulators on the Vector512 path so the max chain does not serialize.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Max(long n, float* a)
    {
        long i = 0;
        float max = float.NegativeInfinity;
        if (Simd.Use512 && n >= 64)
        {
            Vector512<float> m0 = Vector512.Load(a), m1 = Vector512.Load(a + 16), m2 = Vector512.Load(a + 32), m3 = Vector512.Load(a + 48);
            for (i = 64; i <= n - 64; i += 64)
            {
                m0 = Vector512.Max(m0, Vector512.Load(a + i));
                m1 = Vector512.Max(m1, Vector512.Load(a + i + 16));
                m2 = Vector512.Max(m2, Vector512.Load(a + i + 32));
                m3 = Vector512.Max(m3, Vector512.Load(a + i + 48));
            }
            var acc = Vector512.Max(Vector512.Max(m0, m1), Vector512.Max(m2, m3));
            for (int l = 0; l < 16; l++) max = MathF.Max(max, acc[l]);
        }
        else if (Simd.Use512 && n >= 16)
        {
            var acc = Vector512.Load(a);
            for (i = 16; i <= n - 16; i += 16) acc = Vector512.Max(acc, Vector512.Load(a + i));
            for (int l = 0; l < 16; l++) max = MathF.Max(max, acc[l]);
        }
        else if (Simd.Use256 && n >= 8)
        {
            var acc = Vector256.Load(a);
            for (i = 8; i <= n - 8; i += 8) acc = Vector256.Max(acc, Vector256.Load(a + i));
            for (int l = 0; l < 8; l++) max = MathF.Max(max, acc[l]);
        }
        for (; i < n; i++) max = MathF.Max(max, a[i]);
        return max;
    }

    /// <summary>Σ a[i]·b[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(long n, float* a, float* b) => Sum(new MulOp(), n, a, b);

    /// <summary>y[i] += alpha·x[i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Axpy(long n, float alpha, float* x, float* y) => Map(new ScaleOp(alpha), n, y, accumulate: true, x);

    /// <summary>y[i] = alpha·x[i] (y may be x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Scale(long n, float alpha, float* x, float* y) => Map(new ScaleOp(alpha), n, y, accumulate: false, x);

    /// <summary>dst (+)= a + b.</summary>
    public static void Add(long n, float* a, float* b, float* dst, bool accumulate = false) => Map(new AddOp(), n, dst, accumulate, a, b);

    /// <summary>dst (+)= a·b.</summary>
    public static void Multiply(long n, float* a, float* b, float* dst, bool accumulate = false) => Map(new MulOp(), n, dst, accumulate, a, b);

    public readonly struct MulOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * b;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * b;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * b;
    }

    public readonly struct AddOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a + b;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a + b;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a + b;
    }

    public readonly struct ScaleOp(float alpha) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => alpha * a;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * alpha;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * alpha;
    }
}
