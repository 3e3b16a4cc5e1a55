using PeftSharp.Quantization;
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
    public static void LinearForward4Bit(float* x, Quantized4BitTensor w, float* bias, float* y, int m, DType computeType = DType.F32)
    {
        var (n, k) = FourBitShape(w, computeType);
        using var pin = w.Pin();
        var view = pin.View;
        Run(GemmOperand.F32(x, k, false).RoundedTo(computeType), GemmOperand.FourBitMatrix(&view, trans: true, computeType),
            m, n, k, y, n, accumulate: false);
        AddBias(bias, y, m, n);
    }

    /// <summary>
    /// dX (+)= dY·W with W (n×k) a 4-bit tensor: dY (m×n), dX (m×k); the input gradient of
    /// <see cref="LinearForward4Bit"/>, with dY and the dequantized W rounded to <paramref name="computeType"/> likewise.
    /// </summary>
    public static void LinearBackwardInput4Bit(float* dy, Quantized4BitTensor w, float* dx, int m, bool accumulate, DType computeType = DType.F32)
    {
        var (n, k) = FourBitShape(w, computeType);
        using var pin = w.Pin();
        var view = pin.View;
        Run(GemmOperand.F32(dy, n, false).RoundedTo(computeType), GemmOperand.FourBitMatrix(&view, trans: false, computeType),
            m, k, n, dx, k, accumulate);
    }

    private static (int N, int K) FourBitShape(Quantized4BitTensor w, DType computeType)
    {
        if (computeType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"The compute dtype of a 4-bit product must be F32, BF16 or F16, not {computeType}.", nameof(computeType));
        var shape = w.State.Shape;
        if (shape.Length != 2 || shape[0] > int.MaxValue || shape[1] > int.MaxValue)
            throw new ArgumentException($"A 4-bit linear weight must be 2-D [out, in]; got [{string.Join(", ", shape)}].", nameof(w));
        return ((int)shape[0], (int)shape[1]);
    }
}
