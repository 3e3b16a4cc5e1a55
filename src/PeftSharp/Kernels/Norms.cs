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
        var job = new Job { X = x, Weight = weight, Bias = bias, Mean = mean, Rstd = rstd, Y = y, Rows = rows, Channels = channels, Eps = eps };
        ForRows(&job, &LayerNormForwardRows);
    }

    private static void LayerNormForwardRows(Job* j, long r0, long r1)
    {
        float* x = j->X, weight = j->Weight, bias = j->Bias, mean = j->Mean, rstd = j->Rstd, y = j->Y;
        int channels = j->Channels;
        float eps = j->Eps;
        for (long r = r0; r < r1; r++)
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
        for (long r = 0; r < rows && (dweight != null || dbias != null); r++)
        {
            float* xr = x + r * channels, dyr = dy + r * channels;
            if (dbias != null) Elementwise.Axpy(channels, 1f, dyr, dbias);
            if (dweight != null) Elementwise.Map(new NormTimesOp(mean[r], rstd[r]), channels, dweight, true, xr, dyr);
        }
        if (dx == null) return;
        var job = new Job { X = x, Weight = weight, Mean = mean, Rstd = rstd, Dy = dy, Dx = dx, Rows = rows, Channels = channels };
        ForRows(&job, &LayerNormBackwardRows);
    }

    private static void LayerNormBackwardRows(Job* j, long r0, long r1)
    {
        float* x = j->X, weight = j->Weight, mean = j->Mean, rstd = j->Rstd, dy = j->Dy, dx = j->Dx;
        int channels = j->Channels;
        for (long r = r0; r < r1; r++)
        {
            float* xr = x + r * channels, dyr = dy + r * channels;
            float m = mean[r], s = rstd[r];
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
        var job = new Job { X = x, Weight = weight, Rstd = rstd, Y = y, Rows = rows, Channels = channels, Eps = eps };
        ForRows(&job, &RmsNormForwardRows);
    }

    private static void RmsNormForwardRows(Job* j, long r0, long r1)
    {
        float* x = j->X, weight = j->Weight, rstd = j->Rstd, y = j->Y;
        int channels = j->Channels;
        float eps = j->Eps;
        for (long r = r0; r < r1; r++)
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
        for (long r = 0; r < rows && dweight != null; r++)
            Elementwise.Map(new NormTimesOp(0f, rstd[r]), channels, dweight, true, x + r * channels, dy + r * channels);
        if (dx == null) return;
        var job = new Job { X = x, Weight = weight, Rstd = rstd, Dy = dy, Dx = dx, Rows = rows, Channels = channels };
        ForRows(&job, &RmsNormBackwardRows);
    }

    private static void RmsNormBackwardRows(Job* j, long r0, long r1)
    {
        float* x = j->X, weight = j->Weight, rstd = j->Rstd, dy = j->Dy, dx = j->Dx;
        int channels = j->Channels;
        for (long r = r0; r < r1; r++)
        {
            float* xr = x + r * channels, dyr = dy + r * channels;
            float s = rstd[r];
            float dnormNormMean = Elementwise.Sum(new WeightedNormDotOp(0f, s), channels, xr, weight, dyr) / channels;
            Elementwise.Map(new LayerNormDxOp(0f, s, 0f, dnormNormMean), channels, dx + r * channels, true, xr, weight, dyr);
        }
    }

    private struct Job
    {
        public float* X, Weight, Bias, Mean, Rstd, Y, Dy, Dx;
        public long Rows;
        public int Channels;
        public float Eps;
        public delegate*<Job*, long, long, void> Body;
    }

    /// <summary>Rows per work item when a norm is split over the kernel threads.</summary>
    private const long RowsPerPart = 64;

    /// <summary>Runs <paramref name="body"/> over all rows: on this thread when small, else in parts over the <see cref="Parallelism"/> pool.</summary>
    private static void ForRows(Job* job, delegate*<Job*, long, long, void> body)
    {
        long rows = job->Rows;
        if (rows * job->Channels < 1 << 16 || Parallelism.MaxThreads <= 1)
        {
            body(job, 0, rows);
            return;
        }
        job->Body = body;
        Parallelism.For((int)((rows + RowsPerPart - 1) / RowsPerPart), &RunPart, job);
    }

    private static void RunPart(int part, void* state)
    {
        var job = (Job*)state;
        long r0 = part * RowsPerPart;
        job->Body(job, r0, Math.Min(job->Rows, r0 + RowsPerPart));
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
