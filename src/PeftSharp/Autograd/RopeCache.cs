using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>RoPE cos/sin tables (P, headDim/2), built once from inv_freq (default or rope-scaled).</summary>
public sealed unsafe class RopeCache : IDisposable
{
    private readonly NativeBuffer<float> _cos;
    private readonly NativeBuffer<float> _sin;

    /// <summary>Tables from a precomputed inv_freq (headDim/2 values), e.g. after Llama-3 rope_scaling.</summary>
    public RopeCache(ReadOnlySpan<float> inverseFrequencies, int maxPositions)
    {
        HeadDim = inverseFrequencies.Length * 2;
        MaxPositions = maxPositions;
        _cos = new NativeBuffer<float>((long)maxPositions * inverseFrequencies.Length);
        _sin = new NativeBuffer<float>((long)maxPositions * inverseFrequencies.Length);
        fixed (float* f = inverseFrequencies)
            Rope.BuildTable(f, inverseFrequencies.Length, maxPositions, _cos.Pointer, _sin.Pointer);
    }

    /// <summary>The default rope_type: inv_freq[i] = 1/theta^(2i/headDim).</summary>
    public static RopeCache Create(double theta, int headDim, int maxPositions)
    {
        var inverseFrequencies = new float[headDim / 2];
        fixed (float* f = inverseFrequencies) Rope.InverseFrequencies(theta, headDim, f);
        return new RopeCache(inverseFrequencies, maxPositions);
    }

    public int HeadDim { get; }
    public int MaxPositions { get; }
    public float* Cos => _cos.Pointer;
    public float* Sin => _sin.Pointer;

    public void Dispose()
    {
        _cos.Dispose();
        _sin.Dispose();
    }
}
