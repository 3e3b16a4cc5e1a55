using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

public static unsafe partial class Gemm
{
    /// <summary>
    /// Y = X·Wᵀ (+ bias) with W (n×k, nn.Linear's layout) a 4-bit (NF4/FP4) tensor: X (m×k), bias (n) or null,
    /// Y (m×n). W is dequantized panel by panel inside the packing routine (never a whole dequantized copy). With
    /// <paramref name="computeType"/> BF16 or F16 (bitsandbytes' <c>bnb_4bit_compute_dtype</c>) both the dequantized
    /// weights and X are rounded to that type before the multiply; the accumulation, the bias and Y stay f32.
    /// </summary>
    internal static void LinearForward4Bit(float* x, FourBitView* w, float* bias, float* y, int m, DType computeType = DType.F32)
    {
        var (n, k) = FourBitShape(w, computeType);
        Run(GemmOperand.F32(x, k, false).RoundedTo(computeType), GemmOperand.FourBitMatrix(w, trans: true, computeType),
            m, n, k, y, n, accumulate: false);
        AddBias(bias, y, m, n);
    }

    /// <summary>
    /// dX (+)= dY·W with W (n×k) a 4-bit tensor: dY (m×n), dX (m×k); the input gradient of
    /// <see cref="LinearForward4Bit"/>, with dY and the dequantized W rounded to <paramref name="computeType"/> likewise.
    /// </summary>
    internal static void LinearBackwardInput4Bit(float* dy, FourBitView* w, float* dx, int m, bool accumulate, DType computeType = DType.F32)
    {
        var (n, k) = FourBitShape(w, computeType);
        Run(GemmOperand.F32(dy, n, false).RoundedTo(computeType), GemmOperand.FourBitMatrix(w, trans: false, computeType),
            m, k, n, dx, k, accumulate);
    }

    private static (int N, int K) FourBitShape(FourBitView* w, DType computeType)
    {
        CheckComputeType(computeType);
        if (w->Rows > int.MaxValue || w->Columns > int.MaxValue || w->Rows <= 0 || w->Columns <= 0)
            throw new ArgumentException($"A 4-bit linear weight must be 2-D [out, in] within int range; got [{w->Rows}, {w->Columns}].", nameof(w));
        return ((int)w->Rows, (int)w->Columns);
    }
}
