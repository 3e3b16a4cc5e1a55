using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PeftSharp.Kernels;

/// <summary>
/// The bf16 × bf16 → f32 GEMM micro-kernel on AVX512-BF16 (VDPBF16PS), for products whose operands are both
/// rounded to bfloat16 (a 4-bit weight with <c>bnb_4bit_compute_dtype: bfloat16</c>). .NET 10 has no intrinsic
/// for AVX512-BF16, so the kernel is emitted as machine code at start-up (<see cref="X64Emitter"/>, placed by
/// <see cref="ExecutableCode"/>) and called through an unmanaged function pointer (System V AMD64 ABI).
/// It is used only where the CPU reports AVX512_BF16 (CPUID leaf 7 subleaf 1, EAX bit 5) and the OS saves ZMM
/// state (implied by <see cref="Avx512F.IsSupported"/>), on Linux x64, with the Vector512 path on; otherwise, or
/// with <c>PEFTSHARP_BF16_DOT=0</c>, the product stays on the f32 kernel over the same rounded values.
///
/// Panels are "pair-packed" (<see cref="ToPairs"/>): a strip of width w and depth d becomes ⌈d/2⌉ groups of w
/// 32-bit words, word (q, j) holding element (2q, j) in its low half and (2q + 1, j) in its high half (zero past
/// the depth). One VDPBF16PS then adds both products of a pair into each f32 lane: per Intel's pseudocode the odd
/// element's product first, then the even one's, each a fused multiply-add rounded to nearest even, with
/// denormal inputs read as zero and denormal results flushed to zero, MXCSR neither read nor written.
/// <see cref="ReferenceKernel"/> does exactly that in managed code: the oracle the emitted kernel is tested against.
/// </summary>
internal static unsafe class Bf16Dot
{
    public const int Rows = 8;
    public const int Cols = 48;

    /// <summary>a (pair-packed Ã strip), b (pair-packed B̃ strip), pairs (≥ 1), c, ldc in bytes.</summary>
    private static readonly delegate* unmanaged[SuppressGCTransition]<uint*, uint*, long, float*, long, void> Store, Add;

    /// <summary>Whether the CPU and OS have AVX512-BF16 (CPUID.(EAX=7, ECX=1):EAX[5] with AVX-512 state enabled).</summary>
    public static bool HardwareSupported { get; } = DetectHardware();

    /// <summary>Whether the emitted kernels exist (supported hardware, Linux, executable pages granted, not turned off).</summary>
    public static bool Emitted => Store != null;

    private static bool _disabled;

    /// <summary>Whether GEMMs over bf16-rounded operands use the emitted kernel now.</summary>
    public static bool Enabled => Emitted && !_disabled && Simd.Use512;

    static Bf16Dot()
    {
        if (!HardwareSupported || Environment.GetEnvironmentVariable("PEFTSHARP_BF16_DOT") == "0") return;
        void* store = ExecutableCode.TryPlace(EmitKernel(accumulate: false));
        void* add = store == null ? null : ExecutableCode.TryPlace(EmitKernel(accumulate: true));
        if (add == null) return;
        Store = (delegate* unmanaged[SuppressGCTransition]<uint*, uint*, long, float*, long, void>)store;
        Add = (delegate* unmanaged[SuppressGCTransition]<uint*, uint*, long, float*, long, void>)add;
    }

    /// <summary>Turns the emitted kernel off until the returned scope is disposed (tests and benchmarks compare the paths).</summary>
    public static IDisposable Disable()
    {
        bool previous = _disabled;
        _disabled = true;
        return new Scope(previous);
    }

    private sealed class Scope(bool previous) : IDisposable
    {
        public void Dispose() => _disabled = previous;
    }

    private static bool DetectHardware()
    {
        if (!X86Base.X64.IsSupported || !Avx512F.IsSupported || !Avx512BW.IsSupported) return false;
        var (maxLeaf, _, _, _) = X86Base.CpuId(0, 0);
        if (maxLeaf < 7) return false;
        var (maxSubleaf, _, _, _) = X86Base.CpuId(7, 0);
        if (maxSubleaf < 1) return false;
        var (eax, _, _, _) = X86Base.CpuId(7, 1);
        return (eax & (1 << 5)) != 0;
    }

    /// <summary>
    /// The 8×48 kernel: C[8×48] (+)= Ã·B̃ over <c>pairs</c> pair-packed steps, 24 zmm accumulators (zmm0–23), the
    /// step's three B̃ vectors in zmm24–26, each Ã pair broadcast into zmm27. Arguments (System V): rdi = Ã, rsi = B̃,
    /// rdx = pairs, rcx = C, r8 = ldc in bytes. Touches only caller-saved registers and no stack.
    /// </summary>
    internal static byte[] EmitKernel(bool accumulate)
    {
        const int a = X64Emitter.Rdi, b = X64Emitter.Rsi, count = X64Emitter.Rdx, c = X64Emitter.Rcx, ldc = X64Emitter.R8;
        const int b0 = 24, broadcast = 27;
        var e = new X64Emitter();
        for (int r = 0; r < 24; r++) e.Vpxord(r, r, r);
        int loop = e.Position;
        for (int v = 0; v < 3; v++) e.VmovupsLoad(b0 + v, b, 64 * v);
        for (int i = 0; i < Rows; i++)
        {
            e.VpbroadcastdLoad(broadcast, a, 4 * i);
            for (int v = 0; v < 3; v++) e.Vdpbf16ps(3 * i + v, b0 + v, broadcast);
        }
        e.AddImmediate(a, 4 * Rows);
        e.AddImmediate(b, 4 * Cols);
        e.Decrement(count);
        e.JumpIfNotZero(loop);
        for (int i = 0; i < Rows; i++)
        {
            for (int v = 0; v < 3; v++)
            {
                if (accumulate) e.VaddpsLoad(3 * i + v, 3 * i + v, c, 64 * v);
                e.VmovupsStore(c, 64 * v, 3 * i + v);
            }
            if (i < Rows - 1) e.AddRegister(c, ldc);
        }
        e.Vzeroupper();
        e.Ret();
        return e.ToArray();
    }

    /// <summary>
    /// <see cref="GemmMicroKernel"/>'s signature over pair-packed strips (a: 8 rows, b: 48 columns, both from
    /// <see cref="ToPairs"/> of a depth-<paramref name="kc"/> packing): C[8×48] (+)= Ã·B̃ on the emitted kernel.
    /// </summary>
    public static void Kernel(float* a, float* b, int kc, float* c, long ldc, bool accumulate)
    {
        long pairs = (kc + 1) / 2;
        if (accumulate) Add((uint*)a, (uint*)b, pairs, c, ldc * sizeof(float));
        else Store((uint*)a, (uint*)b, pairs, c, ldc * sizeof(float));
    }

    /// <summary>The oracle: <see cref="Kernel"/> in managed code, VDPBF16PS's arithmetic lane by lane.</summary>
    public static void ReferenceKernel(float* a, float* b, int kc, float* c, long ldc, bool accumulate)
    {
        int pairs = (kc + 1) / 2;
        uint* pa = (uint*)a, pb = (uint*)b;
        for (int i = 0; i < Rows; i++)
            for (int j = 0; j < Cols; j++)
            {
                float sum = 0;
                for (int q = 0; q < pairs; q++) sum = DotPair(pa[q * Rows + i], pb[q * Cols + j], sum);
                float* cij = c + i * ldc + j;
                *cij = accumulate ? *cij + sum : sum;
            }
    }

    /// <summary>
    /// The oracle of a whole product on the emitted kernel (<see cref="GemmDriver"/> with both operands rounded to bf16):
    /// C[i, j] (m×n, row stride ldc) = the f32 sum, in depth order, of one VDPBF16PS chain per
    /// <see cref="GemmBlocking.PairKC"/>-deep block (the first block stored, each later one added), the chain pairing
    /// depths (2q, 2q + 1) of A's row i and B's column j rounded to bf16 (<see cref="ToPairs"/>). The driver splits rows
    /// and columns among tiles and threads, never the depth, so this is its result bit for bit whatever the tiling.
    /// Logical elements are read through <see cref="GemmOperand"/>'s indexer (F32, BF16 or F16 storage, not 4-bit).
    /// </summary>
    internal static void ReferenceProduct(in GemmOperand a, in GemmOperand b, int m, int n, int k, float* c, long ldc)
    {
        int block = Math.Min(GemmBlocking.PairKC, k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float total = 0;
                for (int p0 = 0; p0 < k; p0 += block)
                {
                    float sum = 0;
                    for (int p = p0; p < Math.Min(k, p0 + block); p += 2)
                    {
                        bool odd = p + 1 < Math.Min(k, p0 + block);
                        uint x = Pair(odd ? a[i, p + 1] : 0f, a[i, p]), y = Pair(odd ? b[p + 1, j] : 0f, b[p, j]);
                        sum = DotPair(x, y, sum);
                    }
                    total = p0 == 0 ? sum : total + sum;
                }
                c[i * ldc + j] = total;
            }

        static uint Pair(float high, float low) =>
            (Precision.RoundBf16Bits(BitConverter.SingleToUInt32Bits(high)) & 0xFFFF0000u) | (Precision.RoundBf16Bits(BitConverter.SingleToUInt32Bits(low)) >> 16);
    }

    /// <summary>
    /// One lane of VDPBF16PS: acc += x.hi·y.hi, then acc += x.lo·y.lo, each step a fused multiply-add (the product
    /// of two bf16 values is exact in f32's 24 bits) rounded to nearest even, inputs DAZ, outputs FTZ.
    /// </summary>
    public static float DotPair(uint x, uint y, float acc)
    {
        acc = FlushDenormal(MathF.FusedMultiplyAdd(High(x), High(y), FlushDenormal(acc)));
        return FlushDenormal(MathF.FusedMultiplyAdd(Low(x), Low(y), acc));
    }

    private static float High(uint pair) => FlushDenormal(BitConverter.UInt32BitsToSingle(pair & 0xFFFF0000u));

    private static float Low(uint pair) => FlushDenormal(BitConverter.UInt32BitsToSingle(pair << 16));

    private static float FlushDenormal(float x) => float.IsSubnormal(x) ? MathF.CopySign(0f, x) : x;

    /// <summary>
    /// Rewrites a packed strip in place (depth groups of width f32 values) as ⌈depth/2⌉ groups of width pair words,
    /// each value rounded to bf16, nearest even (as <see cref="GemmPacking.Round"/>). Group q is written after
    /// groups 2q and 2q + 1 are read, and q ≤ 2q, so the rewrite never overwrites a value it has yet to read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToPairs(float* strip, int depth, int width)
    {
        uint* s = (uint*)strip;
        int full = depth / 2;
        for (int q = 0; q < full; q++)
        {
            uint* even = s + (long)2 * q * width, odd = even + width, dst = s + (long)q * width;
            int j = 0;
            if (Simd.Use512)
                for (; j + 16 <= width; j += 16)
                    ((Precision.RoundBf16Bits(Vector512.Load(odd + j)) & Vector512.Create(0xFFFF0000u)) | (Precision.RoundBf16Bits(Vector512.Load(even + j)) >> 16)).Store(dst + j);
            if (Simd.Use256)
                for (; j + 8 <= width; j += 8) // Ã strips are 8 wide
                    ((Precision.RoundBf16Bits(Vector256.Load(odd + j)) & Vector256.Create(0xFFFF0000u)) | (Precision.RoundBf16Bits(Vector256.Load(even + j)) >> 16)).Store(dst + j);
            for (; j < width; j++) dst[j] = (Precision.RoundBf16Bits(odd[j]) & 0xFFFF0000u) | (Precision.RoundBf16Bits(even[j]) >> 16);
        }
        if ((depth & 1) != 0)
        {
            uint* last = s + (long)(depth - 1) * width, dst = s + (long)full * width;
            for (int j = 0; j < width; j++) dst[j] = Precision.RoundBf16Bits(last[j]) >> 16;
        }
    }
}
