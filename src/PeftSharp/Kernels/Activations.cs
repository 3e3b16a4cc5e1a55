using System.Runtime.Intrinsics;
using PeftSharp.Tensors;

namespace PeftSharp.Kernels;

/// <summary>
/// Elementwise activations with hand-written backward (dx += f'(x)·dy), plus dropout and residual add.
/// Buffers are flat (n); shapes do not matter to these kernels.
/// </summary>
public static unsafe class Activations
{
    internal const float GeluScale = 0.7978845608028654f; // sqrt(2/π)
    internal const float GeluCubic = 0.044715f;

    /// <summary>GPT-2's gelu_new: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).</summary>
    public static void GeluForward(float* x /* (n) */, float* y /* (n) out */, long n)
        => Elementwise.Map(new GeluOp(), n, y, false, x);

    public static void GeluBackward(float* x /* (n) */, float* dy /* (n) */, float* dx /* (n) += */, long n)
        => Elementwise.Map(new GeluBackwardOp(), n, dx, true, x, dy);

    /// <summary>SiLU: x·σ(x).</summary>
    public static void SiluForward(float* x /* (n) */, float* y /* (n) out */, long n)
        => Elementwise.Map(new SiluOp(), n, y, false, x);

    public static void SiluBackward(float* x /* (n) */, float* dy /* (n) */, float* dx /* (n) += */, long n)
        => Elementwise.Map(new SiluBackwardOp(), n, dx, true, x, dy);

    /// <summary>SwiGLU as one fused op: y = silu(gate)·up.</summary>
    public static void SwiGluForward(float* gate /* (n) */, float* up /* (n) */, float* y /* (n) out */, long n)
        => Elementwise.Map(new SwiGluOp(), n, y, false, gate, up);

    public static void SwiGluBackward(float* gate /* (n) */, float* up /* (n) */, float* dy /* (n) */,
        float* dgate /* (n) += or null */, float* dup /* (n) += or null */, long n)
    {
        if (dgate != null) Elementwise.Map(new SwiGluGateBackwardOp(), n, dgate, true, gate, up, dy);
        if (dup != null) Elementwise.Map(new SwiGluUpBackwardOp(), n, dup, true, gate, dy);
    }

    /// <summary>
    /// Inverted dropout mask: each element is 0 with probability p, else 1/(1-p); drawn in order
    /// from <paramref name="rng"/>, so a saved RNG state regenerates the same mask.
    /// </summary>
    public static void DropoutMask(Rng rng, float p, float* mask /* (n) out */, long n)
    {
        if (p is < 0f or >= 1f) throw new ArgumentOutOfRangeException(nameof(p), p, "Dropout probability must be in [0, 1).");
        float keep = 1f / (1f - p);
        for (long i = 0; i < n; i++) mask[i] = rng.NextFloat() < p ? 0f : keep;
    }

    /// <summary>y = x·mask (forward) — and the backward dx += dy·mask is the same call with accumulate.</summary>
    public static void ApplyMask(float* x /* (n) */, float* mask /* (n) */, float* y /* (n) */, long n, bool accumulate)
        => Elementwise.Multiply(n, x, mask, y, accumulate);

    /// <summary>Residual add y = a + b (y may alias a or b). Backward is da += dy, db += dy.</summary>
    public static void ResidualForward(float* a /* (n) */, float* b /* (n) */, float* y /* (n) out */, long n)
        => Elementwise.Add(n, a, b, y);

    internal static float Gelu(float x) => 0.5f * x * (1f + MathF.Tanh(GeluScale * (x + GeluCubic * x * x * x)));

    internal static float GeluGrad(float x)
    {
        float t = MathF.Tanh(GeluScale * (x + GeluCubic * x * x * x));
        return 0.5f * (1f + t) + 0.5f * x * (1f - t * t) * GeluScale * (1f + 3f * GeluCubic * x * x);
    }

    internal static float Sigmoid(float x) => 1f / (1f + MathF.Exp(-x));

    private static Vector256<float> Tanh(Vector256<float> u) => Vector256<float>.One - Vector256.Create(2f) / (Vector256.Exp(u + u) + Vector256<float>.One);
    private static Vector512<float> Tanh(Vector512<float> u) => Vector512<float>.One - Vector512.Create(2f) / (FastMath.Exp(u + u) + Vector512<float>.One);
    private static Vector256<float> Sigmoid(Vector256<float> x) => Vector256<float>.One / (Vector256<float>.One + Vector256.Exp(-x));
    private static Vector512<float> Sigmoid(Vector512<float> x) => Vector512<float>.One / (Vector512<float>.One + FastMath.Exp(-x));

    private readonly struct GeluOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => Gelu(a);
        public Vector256<float> Invoke(Vector256<float> x, Vector256<float> b, Vector256<float> c, Vector256<float> d)
            => Vector256.Create(0.5f) * x * (Vector256<float>.One + Tanh(Vector256.Create(GeluScale) * (x + Vector256.Create(GeluCubic) * x * x * x)));
        public Vector512<float> Invoke(Vector512<float> x, Vector512<float> b, Vector512<float> c, Vector512<float> d)
            => Vector512.Create(0.5f) * x * (Vector512<float>.One + Tanh(Vector512.Create(GeluScale) * (x + Vector512.Create(GeluCubic) * x * x * x)));
    }

    private readonly struct GeluBackwardOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => GeluGrad(a) * b;
        public Vector256<float> Invoke(Vector256<float> x, Vector256<float> dy, Vector256<float> c, Vector256<float> d)
        {
            var x2 = x * x;
            var t = Tanh(Vector256.Create(GeluScale) * (x + Vector256.Create(GeluCubic) * x2 * x));
            var half = Vector256.Create(0.5f);
            var grad = half * (Vector256<float>.One + t) + half * x * (Vector256<float>.One - t * t) * GeluScale * (Vector256<float>.One + Vector256.Create(3f * GeluCubic) * x2);
            return grad * dy;
        }
        public Vector512<float> Invoke(Vector512<float> x, Vector512<float> dy, Vector512<float> c, Vector512<float> d)
        {
            var x2 = x * x;
            var t = Tanh(Vector512.Create(GeluScale) * (x + Vector512.Create(GeluCubic) * x2 * x));
            var half = Vector512.Create(0.5f);
            var grad = half * (Vector512<float>.One + t) + half * x * (Vector512<float>.One - t * t) * GeluScale * (Vector512<float>.One + Vector512.Create(3f * GeluCubic) * x2);
            return grad * dy;
        }
    }

    private readonly struct SiluOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * Sigmoid(a);
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * Sigmoid(a);
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * Sigmoid(a);
    }

    /// <summary>σ(x)·(1 + x·(1 - σ(x)))·dy.</summary>
    private readonly struct SiluBackwardOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) { float s = Sigmoid(a); return s * (1f + a * (1f - s)) * b; }
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
        { var s = Sigmoid(a); return s * (Vector256<float>.One + a * (Vector256<float>.One - s)) * b; }
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
        { var s = Sigmoid(a); return s * (Vector512<float>.One + a * (Vector512<float>.One - s)) * b; }
    }

    private readonly struct SwiGluOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * Sigmoid(a) * b;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * Sigmoid(a) * b;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * Sigmoid(a) * b;
    }

    /// <summary>a = gate, b = up, c = dy: dy·up·silu'(gate).</summary>
    private readonly struct SwiGluGateBackwardOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) { float s = Sigmoid(a); return s * (1f + a * (1f - s)) * b * c; }
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
        { var s = Sigmoid(a); return s * (Vector256<float>.One + a * (Vector256<float>.One - s)) * b * c; }
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
        { var s = Sigmoid(a); return s * (Vector512<float>.One + a * (Vector512<float>.One - s)) * b * c; }
    }

    /// <summary>a = gate, b = dy: dy·silu(gate).</summary>
    private readonly struct SwiGluUpBackwardOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * Sigmoid(a) * b;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * Sigmoid(a) * b;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * Sigmoid(a) * b;
    }
}
