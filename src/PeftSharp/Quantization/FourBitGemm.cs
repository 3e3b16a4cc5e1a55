using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Quantization;

/// <summary>The 4-bit GEMMs (<see cref="Gemm.LinearForward4Bit"/>) on a <see cref="Quantized4BitTensor"/>: pins its state for the call.</summary>
public static unsafe class FourBitGemm
{
    /// <summary>Y = X·Wᵀ (+ bias) with W a 2-D [out, in] 4-bit tensor; see <see cref="Gemm.LinearForward4Bit"/>.</summary>
    public static void LinearForward4Bit(float* x, Quantized4BitTensor w, float* bias, float* y, int m, DType computeType = DType.F32)
    {
        CheckMatrix(w);
        using var pin = w.Pin();
        var view = pin.View;
        Gemm.LinearForward4Bit(x, &view, bias, y, m, computeType);
    }

    /// <summary>dX (+)= dY·W with W a 2-D [out, in] 4-bit tensor; see <see cref="Gemm.LinearBackwardInput4Bit"/>.</summary>
    public static void LinearBackwardInput4Bit(float* dy, Quantized4BitTensor w, float* dx, int m, bool accumulate, DType computeType = DType.F32)
    {
        CheckMatrix(w);
        using var pin = w.Pin();
        var view = pin.View;
        Gemm.LinearBackwardInput4Bit(dy, &view, dx, m, accumulate, computeType);
    }

    private static void CheckMatrix(Quantized4BitTensor w)
    {
        var shape = w.State.Shape;
        if (shape.Length != 2 || shape[0] > int.MaxValue || shape[1] > int.MaxValue)
            throw new ArgumentException($"A 4-bit linear weight must be 2-D [out, in]; got [{string.Join(", ", shape)}].", nameof(w));
    }
}
