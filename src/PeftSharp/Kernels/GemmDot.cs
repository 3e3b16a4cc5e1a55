using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// Products with few columns (n ≤ 16, a LoRA rank) whose A is stored row by row (X·Aᵀ, dY·B): each C element is
/// the dot product of a row of A with a row of op(B)ᵀ. Three rows × eight columns at a time in 24 zmm accumulators,
/// so A, the large operand, streams through exactly once and nothing of it is packed.
/// </summary>
internal static unsafe class GemmDot
{
    public const int MaxColumns = 16;
    private const int Rows = 3, Cols = 8;

    public static bool Applies(in GemmProblem pb, SimdPath path)
        => path == SimdPath.Vector512 && pb.N <= MaxColumns && !pb.A.Trans && pb.A.Type == DType.F32 && pb.A.RoundTo == DType.F32 && pb.K >= 16;

    public static void Run(in GemmProblem pb)
    {
        int n = pb.N, k = pb.K;
        var job = new Job { A = (float*)pb.A.Data, Lda = pb.A.Ld, C = pb.C, Ldc = pb.Ldc, M = pb.M, N = n, K = k, Accumulate = pb.Accumulate };
        if (pb.B.Trans && pb.B.Type == DType.F32 && n % Cols == 0)
        {
            job.Bt = (float*)pb.B.Data;
            job.Ldb = pb.B.Ld;
        }
        else
        {
            // op(B)ᵀ as rows of k floats, padded with zero rows to a whole column group.
            int rows = (n + Cols - 1) / Cols * Cols;
            var scratch = GemmScratch.Current;
            job.Bt = scratch.Narrow((long)rows * k);
            GemmPacking.Pack(pb.B.Transposed, 0, n, 0, k, k, job.Bt, scratch.Row(Math.Max(n, 16)));
            new Span<float>(job.Bt + (long)n * k, (rows - n) * k).Clear();
            job.Ldb = k;
        }
        long macs = (long)pb.M * n * k;
        int threads = macs < GemmBlocking.ParallelMinMacs ? 1 : Parallelism.MaxThreads;
        int parts = threads <= 1 ? 1 : Math.Min(4 * threads, (pb.M + Rows - 1) / Rows);
        job.Parts = parts;
        if (parts <= 1) RunRows(job, 0, pb.M);
        else Parallelism.For(parts, &RunPart, &job);
    }

    private struct Job
    {
        public float* A, Bt, C;
        public long Lda, Ldb, Ldc;
        public int M, N, K, Parts;
        public bool Accumulate;
    }

    private static void RunPart(int part, void* state)
    {
        ref var job = ref *(Job*)state;
        int groups = (job.M + Rows - 1) / Rows;
        int g0 = (int)((long)groups * part / job.Parts), g1 = (int)((long)groups * (part + 1) / job.Parts);
        RunRows(job, g0 * Rows, Math.Min(job.M, g1 * Rows));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunRows(in Job job, int i0, int i1)
    {
        float* result = stackalloc float[Rows * Cols];
        for (int i = i0; i < i1; i += Rows)
        {
            int rows = Math.Min(Rows, i1 - i);
            // Rows past the end repeat the last one; their results are dropped.
            float* a0 = job.A + i * job.Lda;
            float* a1 = job.A + Math.Min(i + 1, i1 - 1) * job.Lda;
            float* a2 = job.A + Math.Min(i + 2, i1 - 1) * job.Lda;
            for (int j = 0; j < job.N; j += Cols)
            {
                DotTile(a0, a1, a2, job.Ldb, job.Bt + j * job.Ldb, job.K, result);
                int cols = Math.Min(Cols, job.N - j);
                for (int r = 0; r < rows; r++)
                {
                    float* c = job.C + (i + r) * job.Ldc + j;
                    float* s = result + r * Cols;
                    if (job.Accumulate) for (int t = 0; t < cols; t++) c[t] += s[t];
                    else for (int t = 0; t < cols; t++) c[t] = s[t];
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotTile(float* a0, float* a1, float* a2, long ldb, float* bt, int k, float* result)
    {
        float* b0 = bt + 0 * ldb;
        float* b1 = bt + 1 * ldb;
        float* b2 = bt + 2 * ldb;
        float* b3 = bt + 3 * ldb;
        float* b4 = bt + 4 * ldb;
        float* b5 = bt + 5 * ldb;
        float* b6 = bt + 6 * ldb;
        float* b7 = bt + 7 * ldb;
        var c00 = Vector512<float>.Zero; var c01 = Vector512<float>.Zero; var c02 = Vector512<float>.Zero; var c03 = Vector512<float>.Zero; var c04 = Vector512<float>.Zero; var c05 = Vector512<float>.Zero; var c06 = Vector512<float>.Zero; var c07 = Vector512<float>.Zero;
        var c10 = Vector512<float>.Zero; var c11 = Vector512<float>.Zero; var c12 = Vector512<float>.Zero; var c13 = Vector512<float>.Zero; var c14 = Vector512<float>.Zero; var c15 = Vector512<float>.Zero; var c16 = Vector512<float>.Zero; var c17 = Vector512<float>.Zero;
        var c20 = Vector512<float>.Zero; var c21 = Vector512<float>.Zero; var c22 = Vector512<float>.Zero; var c23 = Vector512<float>.Zero; var c24 = Vector512<float>.Zero; var c25 = Vector512<float>.Zero; var c26 = Vector512<float>.Zero; var c27 = Vector512<float>.Zero;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            var x0 = Vector512.Load(a0 + p); var x1 = Vector512.Load(a1 + p); var x2 = Vector512.Load(a2 + p);
            var w0 = Vector512.Load(b0 + p); c00 = Vector512.FusedMultiplyAdd(x0, w0, c00); c10 = Vector512.FusedMultiplyAdd(x1, w0, c10); c20 = Vector512.FusedMultiplyAdd(x2, w0, c20);
            var w1 = Vector512.Load(b1 + p); c01 = Vector512.FusedMultiplyAdd(x0, w1, c01); c11 = Vector512.FusedMultiplyAdd(x1, w1, c11); c21 = Vector512.FusedMultiplyAdd(x2, w1, c21);
            var w2 = Vector512.Load(b2 + p); c02 = Vector512.FusedMultiplyAdd(x0, w2, c02); c12 = Vector512.FusedMultiplyAdd(x1, w2, c12); c22 = Vector512.FusedMultiplyAdd(x2, w2, c22);
            var w3 = Vector512.Load(b3 + p); c03 = Vector512.FusedMultiplyAdd(x0, w3, c03); c13 = Vector512.FusedMultiplyAdd(x1, w3, c13); c23 = Vector512.FusedMultiplyAdd(x2, w3, c23);
            var w4 = Vector512.Load(b4 + p); c04 = Vector512.FusedMultiplyAdd(x0, w4, c04); c14 = Vector512.FusedMultiplyAdd(x1, w4, c14); c24 = Vector512.FusedMultiplyAdd(x2, w4, c24);
            var w5 = Vector512.Load(b5 + p); c05 = Vector512.FusedMultiplyAdd(x0, w5, c05); c15 = Vector512.FusedMultiplyAdd(x1, w5, c15); c25 = Vector512.FusedMultiplyAdd(x2, w5, c25);
            var w6 = Vector512.Load(b6 + p); c06 = Vector512.FusedMultiplyAdd(x0, w6, c06); c16 = Vector512.FusedMultiplyAdd(x1, w6, c16); c26 = Vector512.FusedMultiplyAdd(x2, w6, c26);
            var w7 = Vector512.Load(b7 + p); c07 = Vector512.FusedMultiplyAdd(x0, w7, c07); c17 = Vector512.FusedMultiplyAdd(x1, w7, c17); c27 = Vector512.FusedMultiplyAdd(x2, w7, c27);
        }
        result[0] = Vector512.Sum(c00);
        result[1] = Vector512.Sum(c01);
        result[2] = Vector512.Sum(c02);
        result[3] = Vector512.Sum(c03);
        result[4] = Vector512.Sum(c04);
        result[5] = Vector512.Sum(c05);
        result[6] = Vector512.Sum(c06);
        result[7] = Vector512.Sum(c07);
        result[8] = Vector512.Sum(c10);
        result[9] = Vector512.Sum(c11);
        result[10] = Vector512.Sum(c12);
        result[11] = Vector512.Sum(c13);
        result[12] = Vector512.Sum(c14);
        result[13] = Vector512.Sum(c15);
        result[14] = Vector512.Sum(c16);
        result[15] = Vector512.Sum(c17);
        result[16] = Vector512.Sum(c20);
        result[17] = Vector512.Sum(c21);
        result[18] = Vector512.Sum(c22);
        result[19] = Vector512.Sum(c23);
        result[20] = Vector512.Sum(c24);
        result[21] = Vector512.Sum(c25);
        result[22] = Vector512.Sum(c26);
        result[23] = Vector512.Sum(c27);
        for (; p < k; p++)
        {
            float x0 = a0[p]; float x1 = a1[p]; float x2 = a2[p];
            float w0 = b0[p]; result[0] += x0 * w0; result[8] += x1 * w0; result[16] += x2 * w0;
            float w1 = b1[p]; result[1] += x0 * w1; result[9] += x1 * w1; result[17] += x2 * w1;
            float w2 = b2[p]; result[2] += x0 * w2; result[10] += x1 * w2; result[18] += x2 * w2;
            float w3 = b3[p]; result[3] += x0 * w3; result[11] += x1 * w3; result[19] += x2 * w3;
            float w4 = b4[p]; result[4] += x0 * w4; result[12] += x1 * w4; result[20] += x2 * w4;
            float w5 = b5[p]; result[5] += x0 * w5; result[13] += x1 * w5; result[21] += x2 * w5;
            float w6 = b6[p]; result[6] += x0 * w6; result[14] += x1 * w6; result[22] += x2 * w6;
            float w7 = b7[p]; result[7] += x0 * w7; result[15] += x1 * w7; result[23] += x2 * w7;
        }
    }
}
