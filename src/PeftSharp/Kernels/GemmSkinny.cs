using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// Products with few rows (a decoding step, a short prompt) of the form X·Wᵀ, with W stored row by row (n×k, F32,
/// BF16, F16, or 4-bit codes): each W row is a dot product with every X row, so W, the large operand, streams through
/// exactly once and is never packed. Four W rows at a time: W from memory is read row after row (one X row with one
/// accumulator, or each W row against up to four X rows), so it streams in order; W that a later row group re-reads
/// from L2 goes through the interleaved 4×4 tile (16 zmm accumulators, fewer loads per FMA). X rows past m repeat the
/// last one; their results are dropped. F32 and BF16 rows are read in
/// place (bf16 widened in registers); F16 rows are widened, and 4-bit rows dequantized (then rounded to a bf16/f16
/// compute dtype, with X rounded likewise once up front), four rows at a time into a per-thread buffer that stays in
/// L1/L2; with more than four X rows, 4-bit W is dequantized once per block of W rows into an L2-resident buffer that
/// every row group then reads as f32 rows in place (<see cref="RunWidenedBlocks"/>). Every path sums each output in the
/// same order (one accumulator per output, 16 lanes at a time, reduced as <see cref="Vector512.Sum{T}"/> does, then the
/// tail), so a widened or dequantized W gives exactly the f32 product with the widened W. The n rows are split over the
/// threads.
/// </summary>
internal static unsafe class GemmSkinny
{
    public const int MaxRows = 4;
    /// <summary>
    /// Up to this many rows (a batched decoding step of several sequences, a short prompt's prefill) run as groups of
    /// <see cref="MaxRows"/> over each block of <see cref="GroupedBlock"/> W rows in turn, so W comes from memory once and
    /// from L2 for the later groups: cheaper than packing all of W for the blocked GEMM, and each row's sums are the
    /// single-row path's whatever the batch. For W read in place (F32, BF16) and 4-bit W (dequantized once per block,
    /// shared by the groups); the bench's `gemm --grouped-rows N` measures the crossover against the blocked GEMM
    /// (1.1-2.6x at 16-64 rows on one and two threads, equal at 128-256); `quant --gemm --tokens N` the 4-bit case.
    /// </summary>
    internal static int MaxGroupedRows = 64;

    /// <summary>
    /// The same for F16 W, widened into a scratch row first: every row group widens the block again, so past two groups
    /// the blocked GEMM, which widens each panel once while packing, is cheaper. (4-bit W shares one dequantized block
    /// among the groups instead and takes <see cref="MaxGroupedRows"/>; F16 could do the same.)
    /// </summary>
    private const int MaxGroupedWidenedRows = 8;
    /// <summary>W rows per block that every row group passes over before the next (64 rows of 4,096 f32: 1 MiB).</summary>
    private const int GroupedBlock = 64;
    private const int Cols = 4;
    /// <summary>Below this many multiply-adds the product runs on one thread (a GEMV is memory bound, so this is low).</summary>
    private const long ParallelMinMacs = 1L << 17;

    public static bool Applies(in GemmProblem pb, SimdPath path)
        => path == SimdPath.Vector512 && pb.K >= 16
           && !pb.A.Trans && pb.A.Type == DType.F32 && pb.B.Trans
           && pb.M <= GroupedRowLimit(pb)
           && (pb.B.FourBit != null
               ? pb.A.RoundTo == pb.B.RoundTo
               : pb.B.Type is DType.F32 or DType.BF16 or DType.F16 && pb.B.RoundTo == DType.F32 && pb.A.RoundTo == DType.F32);

    /// <summary>
    /// <see cref="MaxGroupedRows"/> for W read in place and for 4-bit W; 4-bit W with bf16 compute takes up to
    /// <see cref="MaxGroupedBf16Rows"/> while the VDPBF16PS kernel (<see cref="Bf16Dot"/>) is on (the shared dequantized blocks
    /// with bf16-rounded operands against that kernel's blocked GEMM, one thread: 2.4-3.8x at 9 rows, 1.2-2.3x at 32, 0.85-1.2x
    /// at 64); F16 W keeps <see cref="MaxGroupedWidenedRows"/>.
    /// </summary>
    private static int GroupedRowLimit(in GemmProblem pb)
    {
        if (pb.B.FourBit != null)
            return pb.A.RoundTo == DType.BF16 && pb.B.RoundTo == DType.BF16 && Bf16Dot.Enabled ? MaxGroupedBf16Rows : MaxGroupedRows;
        return pb.B.Type is DType.F32 or DType.BF16 ? MaxGroupedRows : MaxGroupedWidenedRows;
    }

    /// <summary>The most rows of a bf16-compute 4-bit product on the row groups while the VDPBF16PS kernel is on.</summary>
    private const int MaxGroupedBf16Rows = 32;

    public static void Run(in GemmProblem pb)
    {
        var job = new Job
        {
            A = (float*)pb.A.Data, Lda = pb.A.Ld, B = pb.B.Data, Ldb = pb.B.Ld, BType = pb.B.Type, FourBit = pb.B.FourBit,
            RoundTo = pb.B.RoundTo, C = pb.C, Ldc = pb.Ldc, M = pb.M, N = pb.N, K = pb.K, Accumulate = pb.Accumulate,
        };
        if (pb.A.RoundTo != DType.F32)
        {
            // X rounded to the compute dtype once, on the calling thread, for every part to read.
            float* rounded = GemmScratch.Current.A((long)pb.M * pb.K);
            for (int r = 0; r < pb.M; r++)
                Buffer.MemoryCopy(job.A + r * job.Lda, rounded + (long)r * pb.K, pb.K * sizeof(float), pb.K * sizeof(float));
            GemmPacking.Round(rounded, (long)pb.M * pb.K, pb.A.RoundTo);
            job.A = rounded;
            job.Lda = pb.K;
        }
        long macs = (long)pb.M * pb.N * pb.K;
        int groups = (pb.N + Cols - 1) / Cols;
        int threads = macs < ParallelMinMacs ? 1 : Parallelism.MaxThreads;
        job.Parts = threads <= 1 ? 1 : Math.Min(4 * threads, groups);
        if (job.Parts <= 1) RunRows(job, 0, pb.N);
        else Parallelism.For(job.Parts, &RunPart, &job);
    }

    /// <summary>W rows [j0, j1) against every X row: in groups of <see cref="MaxRows"/> X rows, block by block of W.</summary>
    private static void RunRows(in Job job, int j0, int j1)
    {
        if (job.M <= MaxRows)
        {
            RunColumns(job, j0, j1, streamed: true);
            return;
        }
        if (job.FourBit != null)
        {
            RunWidenedBlocks(job, j0, j1);
            return;
        }
        for (int jb = j0; jb < j1; jb += GroupedBlock)
            for (int r0 = 0; r0 < job.M; r0 += MaxRows)
            {
                var group = job;
                group.A = job.A + r0 * job.Lda;
                group.C = job.C + r0 * job.Ldc;
                group.M = Math.Min(MaxRows, job.M - r0);
                RunColumns(group, jb, Math.Min(j1, jb + GroupedBlock), streamed: r0 == 0);
            }
    }

    /// <summary>
    /// W rows [j0, j1) that are not read in place (4-bit): each block of <see cref="WidenedBlockRows"/> W rows is
    /// dequantized (and rounded to the compute dtype) once into a per-thread f32 buffer that stays in L2, and every row
    /// group of X is then multiplied by that buffer as by F32 rows in place (the 4×4 tile, W from cache): one
    /// dequantization per W element whatever the number of rows, and the sums of <see cref="RunColumns{TRows}"/>, so
    /// each row's result is still the single-row product's.
    /// </summary>
    private static void RunWidenedBlocks(in Job job, int j0, int j1)
    {
        int k = job.K, blockRows = WidenedBlockRows(k);
        float* block = GemmScratch.Current.Dequant((long)blockRows * k);
        var widened = job with { B = block, Ldb = k, BType = DType.F32, FourBit = null, RoundTo = DType.F32 };
        for (int jb = j0; jb < j1; jb += blockRows)
        {
            int rows = Math.Min(blockRows, j1 - jb);
            WidenRows(job, jb, rows, block);
            for (int r0 = 0; r0 < job.M; r0 += MaxRows)
            {
                var group = widened;
                group.A = job.A + r0 * job.Lda;
                group.C = job.C + r0 * job.Ldc + jb;
                group.M = Math.Min(MaxRows, job.M - r0);
                RunColumns<F32Rows>(group, 0, rows, streamed: false);
            }
        }
    }

    /// <summary>W rows per dequantized block: about <see cref="WidenedBlockFloats"/> f32 (64 rows up to k = 1,024), a multiple of <see cref="Cols"/>.</summary>
    private static int WidenedBlockRows(int k) => Math.Clamp((WidenedBlockFloats / k) & ~(Cols - 1), Cols, GroupedBlock);

    /// <summary>256 KiB of f32: with the X rows it stays in a 1 MiB L2 (64 KiB and 1 MiB blocks measured no better).</summary>
    private const int WidenedBlockFloats = 1 << 16;

    /// <summary>W rows [j, j + rows) widened or dequantized into f32 rows of k at <paramref name="destination"/>, then rounded to the compute dtype.</summary>
    private static void WidenRows(in Job job, int j, int rows, float* destination)
    {
        int k = job.K;
        int elementSize = job.BType == DType.F32 ? 4 : 2;
        if (job.FourBit != null && job.FourBit->BlockSize % 32 == 0 && k % job.FourBit->BlockSize == 0)
            DequantizeRows(job.FourBit, j, rows, k, destination);
        else
            for (int c = 0; c < rows; c++)
            {
                if (job.FourBit != null) job.FourBit->Dequantize((long)(j + c) * k, k, destination + (long)c * k);
                else GemmPacking.Widen((byte*)job.B + (j + c) * job.Ldb * elementSize, job.BType, destination + (long)c * k, k);
            }
        if (job.RoundTo != DType.F32) GemmPacking.Round(destination, (long)rows * k, job.RoundTo);
    }

    private struct Job
    {
        public float* A, C;
        public void* B;
        public FourBitView* FourBit;
        public long Lda, Ldb, Ldc;
        public DType BType, RoundTo;
        public int M, N, K, Parts;
        public bool Accumulate;
    }

    private static void RunPart(int part, void* state)
    {
        ref var job = ref *(Job*)state;
        int groups = (job.N + Cols - 1) / Cols;
        int g0 = (int)((long)groups * part / job.Parts), g1 = (int)((long)groups * (part + 1) / job.Parts);
        RunRows(job, g0 * Cols, Math.Min(job.N, g1 * Cols));
    }

    /// <summary><paramref name="streamed"/>: W comes from memory (not from L2 after an earlier row group) and is read in place.</summary>
    private static void RunColumns(in Job job, int j0, int j1, bool streamed)
    {
        if (job.FourBit != null && job.M == 1 && job.RoundTo == DType.F32 && job.FourBit->BlockSize % 32 == 0 && job.K % job.FourBit->BlockSize == 0)
            RunFourBitRow(job, j0, j1);
        else if (job.FourBit == null && job.BType == DType.F32) RunColumns<F32Rows>(job, j0, j1, streamed);
        else if (job.FourBit == null && job.BType == DType.BF16) RunColumns<Bf16Rows>(job, j0, j1, streamed);
        else RunColumns<F32Rows>(job, j0, j1, streamed: false);
    }

    /// <summary>Rows of W read as <typeparamref name="TRows"/>: in place, or (F16, 4-bit) first made f32 rows in a per-thread buffer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunColumns<TRows>(in Job job, int j0, int j1, bool streamed) where TRows : struct, IRowLoad
    {
        int k = job.K, m = job.M;
        float* result = stackalloc float[MaxRows * Cols];
        float* a0 = job.A, a1 = job.A + Math.Min(1, m - 1) * job.Lda, a2 = job.A + Math.Min(2, m - 1) * job.Lda, a3 = job.A + Math.Min(3, m - 1) * job.Lda;
        bool inPlace = job.FourBit == null && job.BType is DType.F32 or DType.BF16;
        int elementSize = job.BType == DType.F32 ? 4 : 2;
        float* widened = inPlace ? null : GemmScratch.Current.Row((long)Cols * k);
        for (int j = j0; j < j1; j += Cols)
        {
            int cols = Math.Min(Cols, j1 - j);
            byte* w0, w1, w2, w3;
            if (inPlace)
            {
                byte* w = (byte*)job.B + j * job.Ldb * elementSize;
                w0 = w;
                w1 = w + Math.Min(1, cols - 1) * job.Ldb * elementSize;
                w2 = w + Math.Min(2, cols - 1) * job.Ldb * elementSize;
                w3 = w + Math.Min(3, cols - 1) * job.Ldb * elementSize;
            }
            else
            {
                WidenRows(job, j, cols, widened);
                w0 = (byte*)widened;
                w1 = (byte*)(widened + (long)Math.Min(1, cols - 1) * k);
                w2 = (byte*)(widened + (long)Math.Min(2, cols - 1) * k);
                w3 = (byte*)(widened + (long)Math.Min(3, cols - 1) * k);
            }
            if (m == 1) DotRow<TRows>(a0, w0, w1, w2, w3, k, result);
            else if (streamed && inPlace) DotColumns<TRows>(a0, a1, a2, a3, w0, w1, w2, w3, k, result);
            else DotTile<TRows>(a0, a1, a2, a3, w0, w1, w2, w3, k, result);
            for (int r = 0; r < m; r++)
            {
                float* c = job.C + r * job.Ldc + j;
                float* s = result + r * Cols;
                if (job.Accumulate) for (int t = 0; t < cols; t++) c[t] += s[t];
                else for (int t = 0; t < cols; t++) c[t] = s[t];
            }
        }
    }

    /// <summary>
    /// How far past the four rows in hand <see cref="RunFourBitRow"/> fetches ahead, in bytes: beyond the group it is reading
    /// side by side, W continues as one stream, which the prefetch keeps in flight.
    /// </summary>
    private const int FourBitPrefetchBytes = 4096;

    /// <summary>
    /// One X row against 4-bit W rows whose blocks tile each row (k a multiple of the block size, the block size of 32
    /// or more): codes are looked up and scaled in registers, 32 at a time, and never written out. Four rows at a time
    /// (then one by one); each value is table[code] · absmax as <see cref="FourBitView.Dequantize"/> computes it, and each
    /// row's sum runs in <see cref="DotRow{TRows}"/>'s order, so the result is exactly the f32 product with the dequantized rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunFourBitRow(in Job job, int j0, int j1)
    {
        var view = job.FourBit;
        int k = job.K, blockSize = view->BlockSize, blocksPerRow = k / blockSize;
        var lut = Vector512.Load(view->Table);
        float* x = job.A;
        int j = j0;
        int rowBytes = k / 2;
        // Four rows at a time: four independent accumulator chains (one row's FMAs depend on each other, 4 cycles apart, which
        // held a row to 4 codes a cycle: 12.3 G codes/s a core), each summed in the one-row order below, so each output has
        // the same bits. Read side by side, four rows are four short streams, which on their own slowed a decode from DRAM
        // (docs/PERFORMANCE.md, "NF4 decode at the TinyLlama shape"); so the rows after them, contiguous, are fetched ahead
        // one cache line per step, as fast as the group consumes them.
        for (; j + 4 <= j1; j += 4)
        {
            byte* q0 = view->Packed + (long)j * rowBytes, q1 = q0 + rowBytes, q2 = q1 + rowBytes, q3 = q2 + rowBytes;
            byte* ahead = q0 + 4L * rowBytes + FourBitPrefetchBytes;
            Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            long block = (long)j * blocksPerRow;
            for (int b = 0; b < blocksPerRow; b++, block++)
            {
                var s0 = lut * Vector512.Create(view->BlockScale(block));
                var s1 = lut * Vector512.Create(view->BlockScale(block + blocksPerRow));
                var s2 = lut * Vector512.Create(view->BlockScale(block + 2 * blocksPerRow));
                var s3 = lut * Vector512.Create(view->BlockScale(block + 3 * blocksPerRow));
                for (int p = b * blockSize, end = p + blockSize; p < end; p += 32)
                {
                    Sse.Prefetch0(ahead + p * 2);
                    var xLow = Vector512.Load(x + p);
                    var xHigh = Vector512.Load(x + p + 16);
                    Accumulate(q0 + p / 2, s0, xLow, xHigh, ref acc0);
                    Accumulate(q1 + p / 2, s1, xLow, xHigh, ref acc1);
                    Accumulate(q2 + p / 2, s2, xLow, xHigh, ref acc2);
                    Accumulate(q3 + p / 2, s3, xLow, xHigh, ref acc3);
                }
            }
            float* c = job.C + j;
            if (job.Accumulate)
            {
                c[0] += Vector512.Sum(acc0); c[1] += Vector512.Sum(acc1); c[2] += Vector512.Sum(acc2); c[3] += Vector512.Sum(acc3);
            }
            else
            {
                c[0] = Vector512.Sum(acc0); c[1] = Vector512.Sum(acc1); c[2] = Vector512.Sum(acc2); c[3] = Vector512.Sum(acc3);
            }
        }
        for (; j < j1; j++)
        {
            // One row after another (W read as one stream, as in DotRow), one accumulator per row.
            byte* q = view->Packed + (long)j * k / 2;
            var acc = Vector512<float>.Zero;
            for (int b = 0; b < blocksPerRow; b++)
            {
                // table[code] · absmax for the block's 16 codes, once per block: the same products the lanes would form.
                var scaled = lut * Vector512.Create(view->BlockScale((long)j * blocksPerRow + b));
                for (int p = b * blockSize, end = p + blockSize; p < end; p += 32)
                    Accumulate(q + p / 2, scaled, Vector512.Load(x + p), Vector512.Load(x + p + 16), ref acc);
            }
            float* c = job.C + j;
            if (job.Accumulate) *c += Vector512.Sum(acc);
            else *c = Vector512.Sum(acc);
        }
    }

    /// <summary>
    /// 32 codes (16 bytes, the first element in the high nibble) looked up in the block's scaled table and multiplied into
    /// <paramref name="acc"/>, 16 at a time in order. VPERMPS reads only the low four bits of each index, so neither nibble
    /// needs masking: a byte widened to 32 bits indexes by its low nibble, and the same byte shifted right by four (within
    /// its 16-bit lane, which brings the next byte's bits in above bit 3) by its high one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(byte* codes, Vector512<float> scaledTable, Vector512<float> xLow, Vector512<float> xHigh, ref Vector512<float> acc)
    {
        var raw = Vector128.Load(codes);
        var high = (raw.AsUInt16() >> 4).AsByte();
        acc = Vector512.FusedMultiplyAdd(xLow, LookupLow(raw, high, scaledTable), acc);
        acc = Vector512.FusedMultiplyAdd(xHigh, LookupHigh(raw, high, scaledTable), acc);
    }

    /// <summary>The first 16 of the 32 codes in <paramref name="raw"/> (<paramref name="high"/>: raw's 16-bit lanes shifted right by four) looked up in the scaled table (see <see cref="Accumulate"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> LookupLow(Vector128<byte> raw, Vector128<byte> high, Vector512<float> scaledTable) =>
        Avx512F.PermuteVar16x32(scaledTable, Avx512F.ConvertToVector512Int32(Sse2.UnpackLow(high, raw)));

    /// <summary>The last 16 of the 32 codes looked up likewise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> LookupHigh(Vector128<byte> raw, Vector128<byte> high, Vector512<float> scaledTable) =>
        Avx512F.PermuteVar16x32(scaledTable, Avx512F.ConvertToVector512Int32(Sse2.UnpackHigh(high, raw)));

    /// <summary>
    /// 4-bit W rows [j, j + rows) of k codes whose blocks tile each row (k a multiple of the block size, a block size of
    /// 32 or more) dequantized into f32 rows: the block's scale multiplies the 16-entry table once per block, then 32
    /// codes at a time are looked up as in <see cref="Accumulate"/>: the values <see cref="FourBitView.Dequantize"/>
    /// writes (table[code] · absmax), without its per-call and per-value work.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeRows(FourBitView* view, int j, int rows, int k, float* destination)
    {
        int blockSize = view->BlockSize, blocksPerRow = k / blockSize;
        var lut = Vector512.Load(view->Table);
        for (int r = 0; r < rows; r++)
        {
            long row = j + r;
            byte* q = view->Packed + row * k / 2;
            float* d = destination + (long)r * k;
            for (int b = 0; b < blocksPerRow; b++)
            {
                var scaled = lut * Vector512.Create(view->BlockScale(row * blocksPerRow + b));
                for (int p = b * blockSize, end = p + blockSize; p < end; p += 32)
                {
                    var raw = Vector128.Load(q + p / 2);
                    var high = (raw.AsUInt16() >> 4).AsByte();
                    Vector512.Store(LookupLow(raw, high, scaled), d + p);
                    Vector512.Store(LookupHigh(raw, high, scaled), d + p + 16);
                }
            }
        }
    }

    /// <summary>How a tile reads 16 (or one) f32 values at element p of a W row.</summary>
    private interface IRowLoad
    {
        /// <summary>Bytes per stored element.</summary>
        static abstract int Size { get; }
        static abstract Vector512<float> Load(byte* row, int p);
        static abstract float Load1(byte* row, int p);
    }

    private struct F32Rows : IRowLoad
    {
        public static int Size => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* row, int p) => Vector512.Load((float*)row + p);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(byte* row, int p) => ((float*)row)[p];
    }

    /// <summary>bf16 bits widened in registers: zero-extend to 32 bits, shift into the high half.</summary>
    private struct Bf16Rows : IRowLoad
    {
        public static int Size => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* row, int p) =>
            Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)row + p)), 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(byte* row, int p) => Precision.Bf16ToF32(((ushort*)row)[p]);
    }

    /// <summary>
    /// One X row against four W rows: the 4×4 tile's first row, summed in the same order (one accumulator per output,
    /// 16 lanes at a time, then the tail). The rows are read one after the other, not interleaved: four W rows are
    /// adjacent in memory, so this reads W as one sequential stream, which the hardware prefetcher follows to full speed;
    /// four interleaved rows (1.5-12 KiB each) are four short streams, and even with software prefetching of the next
    /// rows streamed a 154 MB head from DRAM at a third to a half of the sequential order's rate (measured in
    /// docs/PERFORMANCE.md, "Decode: W as one stream").
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotRow<TRows>(float* a0, byte* b0, byte* b1, byte* b2, byte* b3, int k, float* result) where TRows : struct, IRowLoad
    {
        result[0] = Dot<TRows>(a0, b0, k);
        result[1] = Dot<TRows>(a0, b1, k);
        result[2] = Dot<TRows>(a0, b2, k);
        result[3] = Dot<TRows>(a0, b3, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot<TRows>(float* a, byte* b, int k) where TRows : struct, IRowLoad
    {
        var c = Vector512<float>.Zero;
        int p = 0;
        for (; p + 16 <= k; p += 16)
            c = Vector512.FusedMultiplyAdd(Vector512.Load(a + p), TRows.Load(b, p), c);
        float sum = Vector512.Sum(c);
        for (; p < k; p++) sum += a[p] * TRows.Load1(b, p);
        return sum;
    }

    /// <summary>
    /// Four accumulators' lanes summed pairwise in <see cref="Vector512.Sum{T}"/>'s order up to their 128-bit quarters:
    /// quarter q of the result holds ((v0 + v1) + (v2 + v3)) of lanes 4q..4q+3 of a, b, c, d in turn. Each addition is one
    /// of the additions Sum makes (adjacent lanes, then adjacent pairs), four accumulators per instruction. (.NET sums a
    /// Vector512 of floats as Sum(lower half) + Sum(upper half), recursively down to adjacent pairs; the batch-invariance
    /// tests, which compare with the one-row path's Vector512.Sum, fail if that ever changes.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var ab = Avx512F.Shuffle(a, b, 0x88) + Avx512F.Shuffle(a, b, 0xDD);
        var cd = Avx512F.Shuffle(c, d, 0x88) + Avx512F.Shuffle(c, d, 0xDD);
        return Avx512F.Shuffle(ab, cd, 0x88) + Avx512F.Shuffle(ab, cd, 0xDD);
    }

    /// <summary>
    /// Sixteen accumulators' <see cref="Vector512.Sum{T}"/> at once from four <see cref="Sum4"/> results: adjacent
    /// quarters, then the two halves, as Sum adds them, so element i is exactly Sum of the i-th accumulator (a, b, c, d
    /// of the first argument, then of the second, ...). 45 shuffles and adds for 16 sums instead of about 10 per sum.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Sum16(Vector512<float> s0, Vector512<float> s1, Vector512<float> s2, Vector512<float> s3)
    {
        var h01 = Avx512F.Shuffle4x128(s0, s1, 0x88) + Avx512F.Shuffle4x128(s0, s1, 0xDD);
        var h23 = Avx512F.Shuffle4x128(s2, s3, 0x88) + Avx512F.Shuffle4x128(s2, s3, 0xDD);
        return Avx512F.Shuffle4x128(h01, h23, 0x88) + Avx512F.Shuffle4x128(h01, h23, 0xDD);
    }

    /// <summary>
    /// The 4×4 tile of <see cref="DotTile{TRows}"/> with its four W rows read one after the other (each against the four
    /// X rows): W as one stream, as in <see cref="DotRow{TRows}"/>, for W coming from memory; the interleaved tile loads
    /// less per multiply-add and is kept for W that later row groups read from L2. Every sum in the tile's order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotColumns<TRows>(float* a0, float* a1, float* a2, float* a3, byte* b0, byte* b1, byte* b2, byte* b3, int k, float* result) where TRows : struct, IRowLoad
    {
        DotColumn<TRows>(a0, a1, a2, a3, b0, k, result);
        DotColumn<TRows>(a0, a1, a2, a3, b1, k, result + 1);
        DotColumn<TRows>(a0, a1, a2, a3, b2, k, result + 2);
        DotColumn<TRows>(a0, a1, a2, a3, b3, k, result + 3);
    }

    /// <summary>One W row against four X rows: result[r · Cols] for X row r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotColumn<TRows>(float* a0, float* a1, float* a2, float* a3, byte* b, int k, float* result) where TRows : struct, IRowLoad
    {
        var c0 = Vector512<float>.Zero; var c1 = Vector512<float>.Zero; var c2 = Vector512<float>.Zero; var c3 = Vector512<float>.Zero;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            var w = TRows.Load(b, p);
            c0 = Vector512.FusedMultiplyAdd(Vector512.Load(a0 + p), w, c0);
            c1 = Vector512.FusedMultiplyAdd(Vector512.Load(a1 + p), w, c1);
            c2 = Vector512.FusedMultiplyAdd(Vector512.Load(a2 + p), w, c2);
            c3 = Vector512.FusedMultiplyAdd(Vector512.Load(a3 + p), w, c3);
        }
        float s0 = Vector512.Sum(c0), s1 = Vector512.Sum(c1), s2 = Vector512.Sum(c2), s3 = Vector512.Sum(c3);
        for (; p < k; p++)
        {
            float w = TRows.Load1(b, p);
            s0 += a0[p] * w; s1 += a1[p] * w; s2 += a2[p] * w; s3 += a3[p] * w;
        }
        result[0] = s0; result[Cols] = s1; result[2 * Cols] = s2; result[3 * Cols] = s3;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotTile<TRows>(float* a0, float* a1, float* a2, float* a3, byte* b0, byte* b1, byte* b2, byte* b3, int k, float* result) where TRows : struct, IRowLoad
    {
        var c00 = Vector512<float>.Zero; var c01 = Vector512<float>.Zero; var c02 = Vector512<float>.Zero; var c03 = Vector512<float>.Zero;
        var c10 = Vector512<float>.Zero; var c11 = Vector512<float>.Zero; var c12 = Vector512<float>.Zero; var c13 = Vector512<float>.Zero;
        var c20 = Vector512<float>.Zero; var c21 = Vector512<float>.Zero; var c22 = Vector512<float>.Zero; var c23 = Vector512<float>.Zero;
        var c30 = Vector512<float>.Zero; var c31 = Vector512<float>.Zero; var c32 = Vector512<float>.Zero; var c33 = Vector512<float>.Zero;
        int p = 0;
        for (; p + 16 <= k; p += 16)
        {
            var x0 = Vector512.Load(a0 + p); var x1 = Vector512.Load(a1 + p); var x2 = Vector512.Load(a2 + p); var x3 = Vector512.Load(a3 + p);
            var w0 = TRows.Load(b0, p);
            c00 = Vector512.FusedMultiplyAdd(x0, w0, c00); c10 = Vector512.FusedMultiplyAdd(x1, w0, c10); c20 = Vector512.FusedMultiplyAdd(x2, w0, c20); c30 = Vector512.FusedMultiplyAdd(x3, w0, c30);
            var w1 = TRows.Load(b1, p);
            c01 = Vector512.FusedMultiplyAdd(x0, w1, c01); c11 = Vector512.FusedMultiplyAdd(x1, w1, c11); c21 = Vector512.FusedMultiplyAdd(x2, w1, c21); c31 = Vector512.FusedMultiplyAdd(x3, w1, c31);
            var w2 = TRows.Load(b2, p);
            c02 = Vector512.FusedMultiplyAdd(x0, w2, c02); c12 = Vector512.FusedMultiplyAdd(x1, w2, c12); c22 = Vector512.FusedMultiplyAdd(x2, w2, c22); c32 = Vector512.FusedMultiplyAdd(x3, w2, c32);
            var w3 = TRows.Load(b3, p);
            c03 = Vector512.FusedMultiplyAdd(x0, w3, c03); c13 = Vector512.FusedMultiplyAdd(x1, w3, c13); c23 = Vector512.FusedMultiplyAdd(x2, w3, c23); c33 = Vector512.FusedMultiplyAdd(x3, w3, c33);
        }
        Vector512.Store(Sum16(Sum4(c00, c01, c02, c03), Sum4(c10, c11, c12, c13), Sum4(c20, c21, c22, c23), Sum4(c30, c31, c32, c33)), result);
        for (; p < k; p++)
        {
            float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
            float w0 = TRows.Load1(b0, p), w1 = TRows.Load1(b1, p), w2 = TRows.Load1(b2, p), w3 = TRows.Load1(b3, p);
            result[0] += x0 * w0; result[1] += x0 * w1; result[2] += x0 * w2; result[3] += x0 * w3;
            result[4] += x1 * w0; result[5] += x1 * w1; result[6] += x1 * w2; result[7] += x1 * w3;
            result[8] += x2 * w0; result[9] += x2 * w1; result[10] += x2 * w2; result[11] += x2 * w3;
            result[12] += x3 * w0; result[13] += x3 * w1; result[14] += x3 * w2; result[15] += x3 * w3;
        }
    }
}
