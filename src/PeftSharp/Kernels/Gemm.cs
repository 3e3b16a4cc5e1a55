namespace PeftSharp.Kernels;

/// <summary>
/// Single-precision matrix products in the forms training needs. All matrices are row-major.
/// op(A) is A (m×k, row stride lda) or, with transA, the transpose of a stored k×m matrix;
/// likewise op(B) is k×n or the transpose of a stored n×k matrix.
/// C (m×n, row stride ldc) = op(A)·op(B), or += with accumulate.
/// </summary>
public static unsafe class Gemm
{
    public static void Compute(bool transA, bool transB, int m, int n, int k,
        float* a, int lda, float* b, int ldb, float* c, int ldc, bool accumulate)
    {
        GemmReference.Compute(transA, transB, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
    }

    /// <summary>Y = X·Wᵀ (+ bias): X (m×k), W (n×k, as nn.Linear stores it), bias (n) or null, Y (m×n).</summary>
    public static void LinearForward(float* x, float* w, float* bias, float* y, int m, int n, int k)
    {
        Compute(false, true, m, n, k, x, k, w, k, y, n, accumulate: false);
        if (bias != null)
            for (int i = 0; i < m; i++)
                System.Numerics.Tensors.TensorPrimitives.Add(new ReadOnlySpan<float>(y + (long)i * n, n), new ReadOnlySpan<float>(bias, n), new Span<float>(y + (long)i * n, n));
    }

    /// <summary>dX (+)= dY·W: dY (m×n), W (n×k), dX (m×k).</summary>
    public static void LinearBackwardInput(float* dy, float* w, float* dx, int m, int n, int k, bool accumulate)
        => Compute(false, false, m, k, n, dy, n, w, k, dx, k, accumulate);

    /// <summary>dW (+)= dYᵀ·X: dY (m×n), X (m×k), dW (n×k).</summary>
    public static void LinearBackwardWeight(float* dy, float* x, float* dw, int m, int n, int k, bool accumulate)
        => Compute(true, false, n, k, m, dy, n, x, k, dw, k, accumulate);
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
