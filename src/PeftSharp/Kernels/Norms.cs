using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// LayerNorm (GPT-2) and RMSNorm (Llama) over the last dimension, llm.c style: inputs first,
/// destination last; backward accumulates into d-prefixed buffers.
/// </summary>
public static unsafe class Norms
{
    /// <summary>y = (x - mean)·rstd·weight + bias per row; saves mean and rstd for backward.</summary>
    public static void LayerNormForward(
        float* x,      // (N, C)
        float* weight, // (C)
        float* bias,   // (C) or null
        float* mean,   // (N) out, saved
        float* rstd,   // (N) out, saved
        float* y,      // (N, C) out
        long rows, int channels, float eps)
    {
        for (long r = 0; r < rows; r++)
        {
            float* xr = x + r * channels;
            float m = Elementwise.Sum(new IdentityOp(), channels, xr) / channels;
            float variance = Elementwise.Sum(new SquaredDeviationOp(m), channels, xr) / channels;
            float s = 1f / MathF.Sqrt(variance + eps);
            mean[r] = m;
            rstd[r] = s;
            if (bias != null) Elementwise.Map(new LayerNormOutOp(m, s), channels, y + r * channels, false, xr, weight, bias);
            else Elementwise.Map(new LayerNormOutNoBiasOp(m, s), channels, y + r * channels, false, xr, weight);
        }
    }

    public static void LayerNormBackward(
        float* x,       // (N, C)
        float* weight,  // (C)
        float* mean,    // (N) saved
        float* rstd,    // (N) saved
        float* dy,      // (N, C)
        float* dx,      // (N, C) += , or null
        float* dweight, // (C) += , or null
        float* dbias,   // (C) += , or null
        long rows, int channels)
    {
        for (long r = 0; r < rows; r++)
        {
            float* xr = x + r * channels, dyr = dy + r * channels;
            float m = mean[r], s = rstd[r];
            if (dbias != null) Elementwise.Axpy(channels, 1f, dyr, dbias);
            if (dweight != null) Elementwise.Map(new NormTimesOp(m, s), channels, dweight, true, xr, dyr);
            if (dx == null) continue;
            float dnormMean = Elementwise.Sum(new Elementwise.MulOp(), channels, weight, dyr) / channels;
            float dnormNormMean = Elementwise.Sum(new WeightedNormDotOp(m, s), channels, xr, weight, dyr) / channels;
            Elementwise.Map(new LayerNormDxOp(m, s, dnormMean, dnormNormMean), channels, dx + r * channels, true, xr, weight, dyr);
        }
    }

    /// <summary>y = x·rstd·weight with rstd = 1/sqrt(mean(x²) + eps) (Hugging Face LlamaRMSNorm); saves rstd.</summary>
    public static void RmsNormForward(
        float* x,      // (N, C)
        float* weight, // (C)
        float* rstd,   // (N) out, saved
        float* y,      // (N, C) out
        long rows, int channels, float eps)
    {
        for (long r = 0; r < rows; r++)
        {
            float* xr = x + r * channels;
            float s = 1f / MathF.Sqrt(Elementwise.Sum(new SquaredDeviationOp(0f), channels, xr) / channels + eps);
            rstd[r] = s;
            Elementwise.Map(new LayerNormOutNoBiasOp(0f, s), channels, y + r * channels, false, xr, weight);
        }
    }

    public static void RmsNormBackward(
        float* x,       // (N, C)
        float* weight,  // (C)
        float* rstd,    // (N) saved
        float* dy,      // (N, C)
        float* dx,      // (N, C) += , or null
        float* dweight, // (C) += , or null
        long rows, int channels)
    {
        for (long r = 0; r < rows; r++)
        {
            float* xr = x + r * channels, dyr = dy + r * channels;
            float s = rstd[r];
            if (dweight != null) Elementwise.Map(new NormTimesOp(0f, s), channels, dweight, true, xr, dyr);
            if (dx == null) continue;
            float dnormNormMean = Elementwise.Sum(new WeightedNormDotOp(0f, s), channels, xr, weight, dyr) / channels;
            Elementwise.Map(new LayerNormDxOp(0f, s, 0f, dnormNormMean), channels, dx + r * channels, true, xr, weight, dyr);
        }
    }

    private readonly struct IdentityOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a;
    }

    /// <summary>(a - mean)².</summary>
    private readonly struct SquaredDeviationOp(float mean) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) { float t = a - mean; return t * t; }
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) { var t = a - Vector256.Create(mean); return t * t; }
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) { var t = a - Vector512.Create(mean); return t * t; }
    }

    /// <summary>(x - mean)·rstd·w + bias, with a = x, b = w, c = bias.</summary>
    private readonly struct LayerNormOutOp(float mean, float rstd) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => (a - mean) * rstd * b + c;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => (a - Vector256.Create(mean)) * rstd * b + c;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => (a - Vector512.Create(mean)) * rstd * b + c;
    }

    /// <summary>(x - mean)·rstd·w, with a = x, b = w.</summary>
    private readonly struct LayerNormOutNoBiasOp(float mean, float rstd) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => (a - mean) * rstd * b;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => (a - Vector256.Create(mean)) * rstd * b;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => (a - Vector512.Create(mean)) * rstd * b;
    }

    /// <summary>norm·dy with norm = (x - mean)·rstd, a = x, b = dy.</summary>
    private readonly struct NormTimesOp(float mean, float rstd) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => (a - mean) * rstd * b;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => (a - Vector256.Create(mean)) * rstd * b;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => (a - Vector512.Create(mean)) * rstd * b;
    }

    /// <summary>norm·w·dy, a = x, b = w, c = dy.</summary>
    private readonly struct WeightedNormDotOp(float mean, float rstd) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => (a - mean) * rstd * b * c;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => (a - Vector256.Create(mean)) * rstd * b * c;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => (a - Vector512.Create(mean)) * rstd * b * c;
    }

    /// <summary>(w·dy - m1 - norm·m2)·rstd, a = x, b = w, c = dy.</summary>
    private readonly struct LayerNormDxOp(float mean, float rstd, float m1, float m2) : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => (b * c - m1 - (a - mean) * rstd * m2) * rstd;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
            => (b * c - Vector256.Create(m1) - (a - Vector256.Create(mean)) * (rstd * m2)) * rstd;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
            => (b * c - Vector512.Create(m1) - (a - Vector512.Create(mean)) * (rstd * m2)) * rstd;
    }
}
