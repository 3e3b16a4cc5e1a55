using System.Numerics.Tensors;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// Single-precision matrix products in the forms training needs. All matrices are row-major.
/// op(A) is A (m×k, row stride lda) or, with transA, the transpose of a stored k×m matrix;
/// likewise op(B) is k×n or the transpose of a stored n×k matrix.
/// C (m×n, row stride ldc) = op(A)·op(B), or += with accumulate.
/// </summary>
public static unsafe partial class Gemm
{
    public static void Compute(bool transA, bool transB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc, bool accumulate)
        => Run(GemmOperand.F32(a, lda, transA), GemmOperand.F32(b, ldb, transB), m, n, k, c, ldc, accumulate);

    /// <summary>
    /// Y = X·Wᵀ (+ bias): X (m×k), W (n×k, as nn.Linear stores it), bias (n) or null, Y (m×n). With
    /// <paramref name="computeType"/> BF16 (or F16) both X and W are rounded to it while packing, as torch's autocast
    /// multiplies them; the accumulation (on <see cref="Bf16Dot"/>'s kernel where it is on), the bias and Y stay f32.
    /// </summary>
    public static void LinearForward(float* x, float* w, float* bias, float* y, int m, int n, int k, DType computeType = DType.F32)
    {
        Run(Rounded(GemmOperand.F32(x, k, false), computeType), GemmOperand.F32(w, k, true).RoundedTo(computeType), m, n, k, y, n, accumulate: false);
        AddBias(bias, y, m, n);
    }

    /// <summary>
    /// Y = X·Wᵀ (+ bias) with W (n×k) stored as BF16 or F16 bits; W is widened to f32 panel by panel while packing
    /// (and, with <paramref name="computeType"/> BF16 or F16, X and W rounded to it as in the f32 overload).
    /// </summary>
    public static void LinearForward(float* x, ushort* w, DType weightType, float* bias, float* y, int m, int n, int k, DType computeType = DType.F32)
    {
        Run(Rounded(GemmOperand.F32(x, k, false), computeType), HalfOperand(w, k, true, weightType).RoundedTo(computeType), m, n, k, y, n, accumulate: false);
        AddBias(bias, y, m, n);
    }

    /// <summary>dX (+)= dY·W: dY (m×n), W (n×k), dX (m×k); with <paramref name="computeType"/> BF16 (or F16), dY and W rounded to it.</summary>
    public static void LinearBackwardInput(float* dy, float* w, float* dx, int m, int n, int k, bool accumulate, DType computeType = DType.F32)
        => Run(Rounded(GemmOperand.F32(dy, n, false), computeType), GemmOperand.F32(w, k, false).RoundedTo(computeType), m, k, n, dx, k, accumulate);

    /// <summary>dX (+)= dY·W with W (n×k) stored as BF16 or F16 bits; with <paramref name="computeType"/> BF16 (or F16), dY and W rounded to it.</summary>
    public static void LinearBackwardInput(float* dy, ushort* w, DType weightType, float* dx, int m, int n, int k, bool accumulate, DType computeType = DType.F32)
        => Run(Rounded(GemmOperand.F32(dy, n, false), computeType), HalfOperand(w, k, false, weightType).RoundedTo(computeType), m, k, n, dx, k, accumulate);

    /// <summary>dW (+)= dYᵀ·X: dY (m×n), X (m×k), dW (n×k).</summary>
    public static void LinearBackwardWeight(float* dy, float* x, float* dw, int m, int n, int k, bool accumulate)
        => Compute(true, false, n, k, m, dy, n, x, k, dw, k, accumulate);

    private static void Run(GemmOperand a, GemmOperand b, int m, int n, int k, float* c, long ldc, bool accumulate)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        var problem = new GemmProblem { A = a, B = b, C = c, Ldc = ldc, M = m, N = n, K = k, Accumulate = accumulate };
        GemmDriver.Run(problem, Simd.Path);
    }

    /// <summary>The activation operand of a product in <paramref name="computeType"/> (F32, BF16 or F16), checked.</summary>
    private static GemmOperand Rounded(GemmOperand operand, DType computeType)
    {
        CheckComputeType(computeType);
        return operand.RoundedTo(computeType);
    }

    private static void CheckComputeType(DType computeType)
    {
        if (computeType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"The compute dtype of a linear product must be F32, BF16 or F16, not {computeType}.", nameof(computeType));
    }

    private static GemmOperand HalfOperand(ushort* w, int ld, bool trans, DType type)
    {
        if (type is not (DType.BF16 or DType.F16))
            throw new ArgumentException($"A 16-bit weight must be BF16 or F16, not {type}.", nameof(type));
        return new GemmOperand(w, ld, trans, type);
    }

    private static void AddBias(float* bias, float* y, int m, int n)
    {
        if (bias == null) return;
        var b = new ReadOnlySpan<float>(bias, n);
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(y + (long)i * n, n);
            TensorPrimitives.Add(row, b, row);
        }
    }
}

/// <summary>The naive oracle: a triple loop in double precision accumulation. Slow; for tests only.</summary>
public static unsafe class GemmReference
{
    public static void Compute(bool transA, bool transB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
        {
            double sum = 0;
            for (int p = 0; p < k; p++)
            {
                float av = transA ? a[(long)p * lda + i] : a[(long)i * lda + p];
                float bv = transB ? b[(long)j * ldb + p] : b[(long)p * ldb + j];
                sum += (double)av * bv;
            }
            float* cp = c + (long)i * ldc + j;
            *cp = accumulate ? *cp + (float)sum : (float)sum;
        }
    }
}
