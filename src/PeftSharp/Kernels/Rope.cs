using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// Rotary position embedding in Hugging Face's rotate-half convention:
/// y = x·cos + rotate_half(x)·sin, where rotate_half(x) = cat(-x2, x1) and x1/x2 are the two halves
/// of a head (element i pairs with i + headDim/2). The tables hold one half-row per position:
/// cos/sin (P, headDim/2), since HF's table repeats its half. Positions are per token, so packed
/// sequences can restart them.
/// </summary>
public static unsafe class Rope
{
    /// <summary>inv_freq[i] = 1/theta^(2i/headDim), i &lt; headDim/2 (the default rope_type).</summary>
    public static void InverseFrequencies(double theta, int headDim, float* invFreq /* (D/2) out */)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "RoPE needs an even head dimension.");
        for (int i = 0; i < headDim / 2; i++) invFreq[i] = (float)(1.0 / Math.Pow(theta, 2.0 * i / headDim));
    }

    /// <summary>cos/sin[p, i] of the angle p·inv_freq[i] (the product rounded to f32 as HF does).</summary>
    public static void BuildTable(float* invFreq /* (D/2) */, int halfDim, int maxPositions, float* cos /* (P, D/2) out */, float* sin /* (P, D/2) out */)
    {
        for (int p = 0; p < maxPositions; p++)
        for (int i = 0; i < halfDim; i++)
        {
            float angle = p * invFreq[i];
            cos[(long)p * halfDim + i] = (float)Math.Cos(angle);
            sin[(long)p * halfDim + i] = (float)Math.Sin(angle);
        }
    }

    /// <summary>y = rope(x). y must not alias x.</summary>
    public static void Forward(
        float* x,        // (N, H, D)
        int* positions,  // (N)
        float* cos,      // (P, D/2)
        float* sin,      // (P, D/2)
        float* y,        // (N, H, D) out
        int tokens, int heads, int headDim, int maxPositions)
    {
        int half = headDim / 2;
        for (int n = 0; n < tokens; n++)
        {
            int p = positions[n];
            if ((uint)p >= (uint)maxPositions)
                throw new ArgumentOutOfRangeException(nameof(positions), p, $"Position {p} of token {n} is outside the RoPE table of {maxPositions} positions.");
            float* c = cos + (long)p * half, s = sin + (long)p * half;
            for (int h = 0; h < heads; h++)
            {
                long o = ((long)n * heads + h) * headDim;
                float* x1 = x + o, x2 = x1 + half;
                Elementwise.Map(new RotateOp(), half, y + o, false, x1, x2, c, s);        // x1·c - x2·s
                Elementwise.Map(new CounterRotateOp(), half, y + o + half, false, x2, x1, c, s); // x2·c + x1·s
            }
        }
    }

    /// <summary>dx += roteᵀ(dy): dx1 += dy1·c + dy2·s, dx2 += dy2·c - dy1·s.</summary>
    public static void Backward(
        float* dy,       // (N, H, D)
        int* positions,  // (N)
        float* cos,      // (P, D/2)
        float* sin,      // (P, D/2)
        float* dx,       // (N, H, D) +=
        int tokens, int heads, int headDim)
    {
        int half = headDim / 2;
        for (int n = 0; n < tokens; n++)
        {
            float* c = cos + (long)positions[n] * half, s = sin + (long)positions[n] * half;
            for (int h = 0; h < heads; h++)
            {
                long o = ((long)n * heads + h) * headDim;
                float* dy1 = dy + o, dy2 = dy1 + half;
                Elementwise.Map(new CounterRotateOp(), half, dx + o, true, dy1, dy2, c, s);
                Elementwise.Map(new RotateOp(), half, dx + o + half, true, dy2, dy1, c, s);
            }
        }
    }

    /// <summary>a·c - b·s.</summary>
    private readonly struct RotateOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * c - b * d;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * c - b * d;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * c - b * d;
    }

    /// <summary>a·c + b·s.</summary>
    private readonly struct CounterRotateOp : IElementOp
    {
        public float Invoke(float a, float b, float c, float d) => a * c + b * d;
        public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d) => a * c + b * d;
        public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) => a * c + b * d;
    }
}
