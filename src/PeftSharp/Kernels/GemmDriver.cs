using System.Diagnostics;
using System.Runtime.CompilerServices;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>The blocking sizes (in elements) of the packed path; internal so the bench can tune them.</summary>
internal static class GemmBlocking
{
    /// <summary>Depth of one packed block (Ã strip and B̃ strip share it).</summary>
    public static int KC = 256;
    /// <summary>Depth of one packed block for the bf16-pair kernel (<see cref="Bf16Dot"/>): its strips hold two depths per word.</summary>
    public static int PairKC = 256;
    /// <summary>Rows of A packed at once (kept in L2).</summary>
    public static int MC = 192;
    /// <summary>Columns of B packed at once (kept in L2/L3).</summary>
    public static int NC = 768;
    /// <summary>Below this many multiply-adds a product runs on one thread.</summary>
    public static long ParallelMinMacs = 1L << 20;
    /// <summary>
    /// Parts of a parallel product per thread. More let a thread that finishes early (or loses its core to another process) take
    /// another, but each part packs the whole operand it does not split: with two parts a thread, Ã packing took 15-22% of
    /// the 2-thread wall time of the training shapes where Ã is repacked (`gemm --profile-parts`, quiet machine), and one
    /// part a thread raised most of their ratios to OpenBLAS and the distilgpt2 LoRA step 6-17% (docs/PERFORMANCE.md). Each output's sum is
    /// the same whatever the parts, so results do not depend on it.
    /// </summary>
    public static int PartsPerThread = 1;
    /// <summary>
    /// Most floats of an Ã packed whole and kept across a product's column blocks (16 MiB a thread: 1,024 × 4,096, a 7B layer's
    /// input at 1,024 tokens). Packed per block instead, Ã was packed once per NC columns: at a 7B gate_proj on two threads,
    /// 7 times, 7-8% of the product's time with bf16 compute (`quant --gemm --profile-parts`). 0 turns it off.
    /// </summary>
    public static long KeptAFloats = 4L << 20;
}

/// <summary>
/// A micro-kernel and its tile shape. With <see cref="Pairs"/> the kernel reads pair-packed bf16 strips
/// (<see cref="Bf16Dot.ToPairs"/>), which the driver makes from the f32 packing of operands rounded to bf16.
/// </summary>
internal readonly unsafe struct GemmMicroKernel(int rows, int cols, delegate*<float*, float*, int, float*, long, bool, void> kernel, bool pairs = false)
{
    public readonly int Rows = rows;
    public readonly int Cols = cols;
    public readonly delegate*<float*, float*, int, float*, long, bool, void> Kernel = kernel;
    public readonly bool Pairs = pairs;

    /// <summary>
    /// The kernel for a problem: VDPBF16PS (<see cref="Bf16Dot"/>) when both operands are rounded to bf16 and the
    /// emitted kernel is on, else the path's f32 kernel.
    /// </summary>
    public static GemmMicroKernel For(in GemmProblem pb, SimdPath path) =>
        path == SimdPath.Vector512 && pb.A.RoundTo == DType.BF16 && pb.B.RoundTo == DType.BF16 && Bf16Dot.Enabled
            ? new(Bf16Dot.Rows, Bf16Dot.Cols, &Bf16Dot.Kernel, pairs: true)
            : For(path);

    public static GemmMicroKernel For(SimdPath path) => path switch
    {
        SimdPath.Vector512 => new(GemmKernels.Vector512Rows, GemmKernels.Vector512Cols, &GemmKernels.Vector512Kernel),
        SimdPath.Vector256 => new(GemmKernels.Vector256Rows, GemmKernels.Vector256Cols, &GemmKernels.Vector256Kernel),
        _ => new(GemmKernels.ScalarRows, GemmKernels.ScalarCols, &GemmKernels.ScalarKernel),
    };
}

/// <summary>C (m×n, row stride Ldc) (+)= op(A)·op(B).</summary>
internal unsafe struct GemmProblem
{
    public GemmOperand A;
    public GemmOperand B;
    public float* C;
    public long Ldc;
    public int M, N, K;
    public bool Accumulate;
}

/// <summary>Per-thread packing buffers, 64-byte aligned, grown on demand and then reused.</summary>
internal sealed unsafe class GemmScratch
{
    [ThreadStatic] private static GemmScratch? _current;

    private NativeBuffer<float>? _a, _allA, _b, _row, _tile, _narrow, _dequant;

    public static GemmScratch Current => _current ??= new GemmScratch();

    public float* A(long length) => Get(ref _a, length);
    public float* B(long length) => Get(ref _b, length);
    /// <summary>An Ã packed whole for every column block of one product (<see cref="GemmBlocking.KeptAFloats"/>).</summary>
    public float* AllA(long length) => Get(ref _allA, length);
    public float* Row(long length) => Get(ref _row, length);
    public float* Tile(long length) => Get(ref _tile, length);
    public float* Narrow(long length) => Get(ref _narrow, length);
    public float* Dequant(long length) => Get(ref _dequant, length);

    private static float* Get(ref NativeBuffer<float>? buffer, long length)
    {
        if (buffer == null || buffer.Length < length)
        {
            buffer?.Dispose();
            buffer = new NativeBuffer<float>(Math.Max(length, 64), clear: false);
        }
        return buffer.Pointer;
    }
}

/// <summary>
/// The packed, cache-blocked product (Goto/BLIS loop order): for each NC-column block of B and KC-deep block,
/// pack B̃; for each MC-row block of A, pack Ã; then sweep the micro-kernel over the tiles. Edge tiles are
/// computed into a small buffer and added to C, so any m, n, k works.
/// </summary>
internal static unsafe class GemmDriver
{
    public static void Run(in GemmProblem pb, SimdPath path)
    {
        if (pb.M <= 0 || pb.N <= 0) return;
        if (pb.K <= 0)
        {
            if (!pb.Accumulate)
                for (int i = 0; i < pb.M; i++) new Span<float>(pb.C + i * pb.Ldc, pb.N).Clear();
            return;
        }
        if (GemmDot.Applies(pb, path))
        {
            GemmDot.Run(pb);
            return;
        }
        if (GemmSkinny.Applies(pb, path))
        {
            GemmSkinny.Run(pb);
            return;
        }
        if (pb.N <= NarrowColumns && pb.M >= 4 * pb.N && path != SimdPath.Scalar)
        {
            RunNarrow(pb, path);
            return;
        }
        if (GemmFewRows.Applies(pb, path))
        {
            GemmFewRows.Run(pb);
            return;
        }
        var mk = GemmMicroKernel.For(pb, path);
        long macs = (long)pb.M * pb.N * pb.K;
        int threads = macs < GemmBlocking.ParallelMinMacs ? 1 : Parallelism.MaxThreads;
        // Split the columns when they are the longer side, unless the depth is small (a LoRA rank update H·Bᵀ, dH·A):
        // there each thread's share of C is written once with few multiply-adds per element, and two threads writing the
        // two halves of the same rows ran slower together than one alone (0.65-0.7x a thread's rate, `gemm --profile-parts`);
        // by rows, each writes its own contiguous block, and the unsplit operand each then packs (B̃, n × k) is small.
        bool splitN = pb.N >= pb.M && pb.K > SmallDepth;
        int tiles = splitN ? (pb.N + mk.Cols - 1) / mk.Cols : (pb.M + mk.Rows - 1) / mk.Rows;
        int parts = threads <= 1 ? 1 : Math.Min(GemmBlocking.PartsPerThread * threads, tiles);
        if (parts <= 1)
        {
            Block(pb, mk, 0, pb.M, 0, pb.N);
            return;
        }
        var job = new Job { Problem = pb, MicroKernel = mk, Parts = parts, Tiles = tiles, SplitN = splitN };
        Parallelism.For(parts, &RunPart, &job);
    }

    /// <summary>Depth up to which a parallel product is split by rows whatever its shape (see <see cref="Run"/>).</summary>
    private const int SmallDepth = 64;

    /// <summary>Products at most this wide (LoRA ranks) are computed transposed, so the rank becomes the kernel's row strip.</summary>
    private const int NarrowColumns = 16;

    /// <summary>
    /// C (m×n, n tiny) as the transpose of Cᵀ = op(B)ᵀ·op(A)ᵀ (n×m): the micro-kernel's 8 rows then carry the
    /// rank instead of padding a 48-wide column strip, and op(A)ᵀ streams through B̃ packing once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunNarrow(in GemmProblem pb, SimdPath path)
    {
        int m = pb.M, n = pb.N;
        float* t = GemmScratch.Current.Narrow((long)n * m);
        var transposed = new GemmProblem { A = pb.B.Transposed, B = pb.A.Transposed, C = t, Ldc = m, M = n, N = m, K = pb.K, Accumulate = false };
        Run(transposed, path);
        for (int i = 0; i < m; i++)
        {
            float* c = pb.C + i * pb.Ldc;
            if (pb.Accumulate) for (int j = 0; j < n; j++) c[j] += t[(long)j * m + i];
            else for (int j = 0; j < n; j++) c[j] = t[(long)j * m + i];
        }
    }

    private struct Job
    {
        public GemmProblem Problem;
        public GemmMicroKernel MicroKernel;
        public int Parts, Tiles;
        public bool SplitN;
    }

    private static void RunPart(int part, void* state)
    {
        ref var job = ref *(Job*)state;
        long start = GemmPartProfile.Enabled ? Stopwatch.GetTimestamp() : 0;
        int t0 = (int)((long)job.Tiles * part / job.Parts), t1 = (int)((long)job.Tiles * (part + 1) / job.Parts);
        ref var pb = ref job.Problem;
        if (job.SplitN)
            Block(pb, job.MicroKernel, 0, pb.M, t0 * job.MicroKernel.Cols, Math.Min(pb.N, t1 * job.MicroKernel.Cols));
        else
            Block(pb, job.MicroKernel, t0 * job.MicroKernel.Rows, Math.Min(pb.M, t1 * job.MicroKernel.Rows), 0, pb.N);
        if (GemmPartProfile.Enabled) GemmPartProfile.Part(start);
    }

    /// <summary>Computes the C block rows [m0, m1) × columns [n0, n1) on the calling thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Block(in GemmProblem pb, in GemmMicroKernel mk, int m0, int m1, int n0, int n1)
    {
        int mr = mk.Rows, nr = mk.Cols;
        int kcMax = Math.Min(mk.Pairs ? GemmBlocking.PairKC : GemmBlocking.KC, pb.K);
        int mcMax = RoundUp(Math.Min(GemmBlocking.MC, m1 - m0), mr);
        int ncMax = RoundUp(Math.Min(GemmBlocking.NC, n1 - n0), nr);
        var scratch = GemmScratch.Current;
        // With more than one column block, Ã would be packed again for each: pack it all once instead, where it fits.
        int mAll = RoundUp(m1 - m0, mr);
        bool keepA = n1 - n0 > ncMax && (long)mAll * pb.K <= GemmBlocking.KeptAFloats;
        float* packA = keepA ? scratch.AllA((long)mAll * pb.K) : scratch.A((long)mcMax * kcMax);
        float* packB = scratch.B((long)ncMax * kcMax);
        float* row = scratch.Row(kcMax);
        float* tile = scratch.Tile((long)mr * nr);
        var aT = pb.A.Transposed;
        var kernel = mk.Kernel;

        for (int jc = n0; jc < n1; jc += ncMax)
        {
            int nc = Math.Min(ncMax, n1 - jc);
            for (int pc = 0; pc < pb.K; pc += kcMax)
            {
                int kc = Math.Min(kcMax, pb.K - pc);
                bool accumulate = pb.Accumulate || pc > 0;
                long t = GemmPartProfile.Enabled ? Stopwatch.GetTimestamp() : 0;
                GemmPacking.Pack(pb.B, pc, kc, jc, nc, nr, packB, row, mk.Pairs);
                if (GemmPartProfile.Enabled) t = GemmPartProfile.PackB(t);
                for (int ic = m0; ic < m1; ic += mcMax)
                {
                    int mc = Math.Min(mcMax, m1 - ic);
                    // Kept: the block of rows [ic, ic + mc) at depth pc sits at pc·mAll + (ic − m0)·kc, packed in the first column block.
                    float* blockA = keepA ? packA + (long)pc * mAll + (long)(ic - m0) * kc : packA;
                    if (!keepA || jc == n0) GemmPacking.Pack(aT, pc, kc, ic, mc, mr, blockA, row, mk.Pairs);
                    if (GemmPartProfile.Enabled) t = GemmPartProfile.PackA(t);
                    for (int ir = 0; ir < mc; ir += mr)
                    {
                        float* aStrip = blockA + (long)ir * kc;
                        int rows = Math.Min(mr, mc - ir);
                        for (int jr = 0; jr < nc; jr += nr)
                        {
                            float* bStrip = packB + (long)jr * kc;
                            float* c = pb.C + (ic + ir) * pb.Ldc + jc + jr;
                            int cols = Math.Min(nr, nc - jr);
                            if (rows == mr && cols == nr)
                                kernel(aStrip, bStrip, kc, c, pb.Ldc, accumulate);
                            else
                            {
                                kernel(aStrip, bStrip, kc, tile, nr, false);
                                for (int i = 0; i < rows; i++)
                                {
                                    float* ci = c + i * pb.Ldc, ti = tile + i * nr;
                                    if (accumulate) for (int j = 0; j < cols; j++) ci[j] += ti[j];
                                    else for (int j = 0; j < cols; j++) ci[j] = ti[j];
                                }
                            }
                        }
                    }
                    if (GemmPartProfile.Enabled) t = GemmPartProfile.Kernel(t);
                }
            }
        }
    }

    private static int RoundUp(int value, int multiple) => (value + multiple - 1) / multiple * multiple;
}

/// <summary>
/// Where a blocked product's time goes, per thread (bench `gemm --profile-parts`): packing B̃, packing Ã, the micro-kernel
/// loops, and each part's wall time, accumulated by the thread that ran it. Off (the default) it costs a static read per
/// packed block. Not for concurrent products: the counters are global.
/// </summary>
internal static class GemmPartProfile
{
    public static bool Enabled;
    private static readonly object Gate = new();
    private static readonly Dictionary<int, double[]> ByThread = [];
    [ThreadStatic] private static double[]? _mine;

    private static double[] Mine()
    {
        if (_mine != null) return _mine;
        lock (Gate)
        {
            int id = Environment.CurrentManagedThreadId;
            if (!ByThread.TryGetValue(id, out var c)) ByThread[id] = c = new double[5];
            return _mine = c;
        }
    }

    private static long Add(int slot, long since)
    {
        long now = Stopwatch.GetTimestamp();
        Mine()[slot] += (now - since) / (double)Stopwatch.Frequency;
        return now;
    }

    public static long PackB(long since) => Add(0, since);
    public static long PackA(long since) => Add(1, since);
    public static long Kernel(long since) => Add(2, since);

    public static void Part(long since)
    {
        Add(3, since);
        Mine()[4] += 1;
    }

    /// <summary>Seconds in B̃ packing, Ã packing, kernels and parts, and the part count, per thread that ran a part; then cleared.</summary>
    public static List<double[]> TakeAndReset()
    {
        lock (Gate)
        {
            var list = ByThread.Values.Where(c => c[4] > 0).Select(c => (double[])c.Clone()).ToList();
            foreach (var c in ByThread.Values) Array.Clear(c);
            return list;
        }
    }
}