using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>The differentiable 4-bit linear op (QLoRA's frozen base).</summary>
public static unsafe class Ops4Bit
{
    /// <summary>
    /// y = x·Wᵀ + b with W (out, in) a frozen 4-bit tensor, multiplied in <paramref name="computeType"/> (F32, BF16 or
    /// F16; see <see cref="FourBitGemm.LinearForward4Bit"/>). W is a constant: backward computes only dx (dY·W, the
    /// dequant-GEMM) when x needs a gradient, and db when the bias is trainable; never a weight gradient.
    /// </summary>
    public static Tensor Linear4Bit(this Ops ops, Tensor x, Quantized4BitTensor weight, Tensor? bias, DType computeType = DType.F32)
    {
        using var part = StepProfiler.Enter(StepPart.Linear4Bit);
        var tape = ops.Tape;
        var shape = weight.State.Shape;
        if (shape.Length != 2 || shape[1] != x.Columns)
            throw new ArgumentException($"Linear4Bit: input {x.ShapeText} does not match the 4-bit weight [{string.Join(", ", shape)}] (expected (out, {x.Columns})).");
        int m = x.Rows, n = (int)shape[0];
        if (bias != null && bias.Length != n)
            throw new ArgumentException($"Linear4Bit: bias {bias.ShapeText} does not match the 4-bit weight [{string.Join(", ", shape)}].");
        var outShape = (int[])x.Shape.Clone();
        outShape[^1] = n;
        var y = tape.NewTensor(outShape, tape.AnyRequiresGrad(x, bias));
        if (tape.SkipsUnreadProduct) Ops.SkipProduct(tape, y);
        else FourBitGemm.LinearForward4Bit(x.Data, weight, bias == null ? null : bias.Data, y.Data, m, computeType);
        if (y.RequiresGrad)
            tape.Record(() =>
            {
                float* dy = y.Grad;
                if (dy == null) return;
                if (x.RequiresGrad) FourBitGemm.LinearBackwardInput4Bit(dy, weight, tape.GradOf(x), m, accumulate: true, computeType);
                if (bias != null && bias.RequiresGrad)
                {
                    float* db = tape.GradOf(bias);
                    for (int i = 0; i < m; i++) Elementwise.Axpy(n, 1f, dy + (long)i * n, db);
                }
            });
        return y;
    }
}
