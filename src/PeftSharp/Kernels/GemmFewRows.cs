using System.Runtime.CompilerServices;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// Products with few rows (m ≤ <see cref="MaxRows"/>, a LoRA rank) and a row-major f32 B: a LoRA weight gradient
/// dA = dHᵀ·X, and dB = dYᵀ·H computed transposed (<see cref="GemmDriver"/>'s narrow path). The blocked path packs B̃,
/// the large operand, to use each of its values for only m rows: a read, a write and a second read of it against
/// m·k multiply-adds. Here the 8×48 micro-kernel reads B's 48 columns in place (<see cref="GemmKernels.Vector512Kernel(float*, float*, long, int, float*, long, bool)"/>)
/// and only Ã, m × k floats, is packed, once per product. The depth blocks (KC), the kernel and its order of operations
/// are the blocked path's, so each output has the same bits as there, whatever the number of threads.
/// </summary>
internal static unsafe class GemmFewRows
{
    public const int MaxRows = 16;
    private const int Mr = GemmKernels.Vector512Rows, Nr = GemmKernels.Vector512Cols;

    public static bool Applies(in GemmProblem pb, SimdPath path)
        => path == SimdPath.Vector512 && pb.M <= MaxRows && pb.N >= Nr
           && !pb.B.Trans && pb.B.Type == DType.F32 && pb.B.FourBit == null
           && pb.A.RoundTo == DType.F32 && pb.B.RoundTo == DType.F32;

    public static void Run(in GemmProblem pb)
    {
        int kcMax = Math.Min(GemmBlocking.KC, pb.K), mPad = (pb.M + Mr - 1) / Mr * Mr;
        var scratch = GemmScratch.Current;
        // Ã for every depth block, packed once and shared by the threads: block pc holds its strips at mPad·pc.
        float* packA = scratch.A((long)mPad * pb.K);
        float* row = scratch.Row(Math.Max(kcMax, 16));
        var aT = pb.A.Transposed;
        for (int pc = 0; pc < pb.K; pc += kcMax)
            GemmPacking.Pack(aT, pc, Math.Min(kcMax, pb.K - pc), 0, pb.M, Mr, packA + (long)mPad * pc, row);

        int strips = pb.N / Nr;
        long macs = (long)pb.M * pb.N * pb.K;
        int threads = macs < GemmBlocking.ParallelMinMacs ? 1 : Parallelism.MaxThreads;
        var job = new Job { Problem = pb, PackA = packA, KcMax = kcMax, MPad = mPad, Strips = strips, Parts = Math.Min(threads, strips) };
        if (job.Parts <= 1) RunStrips(job, 0, strips);
        else Parallelism.For(job.Parts, &RunPart, &job);
        if (strips * Nr < pb.N) GemmDriver.Block(pb, GemmMicroKernel.For(SimdPath.Vector512), 0, pb.M, strips * Nr, pb.N);
    }

    private struct Job
    {
        public GemmProblem Problem;
        public float* PackA;
        public int KcMax, MPad, Strips, Parts;
    }

    private static void RunPart(int part, void* state)
    {
        ref var job = ref *(Job*)state;
        RunStrips(job, (int)((long)job.Strips * part / job.Parts), (int)((long)job.Strips * (part + 1) / job.Parts));
    }

    /// <summary>Column strips [s0, s1) of C, every row, every depth block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunStrips(in Job job, int s0, int s1)
    {
        ref readonly var pb = ref job.Problem;
        float* b = (float*)pb.B.Data;
        long ldb = pb.B.Ld;
        float* tile = GemmScratch.Current.Tile((long)Mr * Nr);
        for (int s = s0; s < s1; s++)
        {
            int jr = s * Nr;
            for (int pc = 0; pc < pb.K; pc += job.KcMax)
            {
                int kc = Math.Min(job.KcMax, pb.K - pc);
                bool accumulate = pb.Accumulate || pc > 0;
                float* bBlock = b + (long)pc * ldb + jr, aBlock = job.PackA + (long)job.MPad * pc;
                for (int ir = 0; ir < pb.M; ir += Mr)
                {
                    float* c = pb.C + ir * pb.Ldc + jr;
                    int rows = Math.Min(Mr, pb.M - ir);
                    if (rows == Mr)
                    {
                        GemmKernels.Vector512Kernel(aBlock + (long)ir * kc, bBlock, ldb, kc, c, pb.Ldc, accumulate);
                        continue;
                    }
                    GemmKernels.Vector512Kernel(aBlock + (long)ir * kc, bBlock, ldb, kc, tile, Nr, false);
                    for (int i = 0; i < rows; i++)
                    {
                        float* ci = c + i * pb.Ldc, ti = tile + i * Nr;
                        if (accumulate) for (int j = 0; j < Nr; j++) ci[j] += ti[j];
                        else for (int j = 0; j < Nr; j++) ci[j] = ti[j];
                    }
                }
            }
        }
    }
}
