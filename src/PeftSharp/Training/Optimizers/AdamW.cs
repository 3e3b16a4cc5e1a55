using System.Runtime.Intrinsics;
using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Optimizers;

/// <summary>
/// AdamW as torch.optim.AdamW computes it: decoupled weight decay p -= lr·wd·p, then
/// m = β1·m + (1-β1)·g, v = β2·v + (1-β2)·g², p -= (lr/(1-β1ᵗ))·m/(sqrt(v)/sqrt(1-β2ᵗ) + eps).
/// Only parameters that require gradients are updated; each gets its m and v buffers.
/// </summary>
public sealed unsafe class AdamW : IOptimizer
{
    private readonly List<(Parameter Parameter, NativeBuffer<float> M, NativeBuffer<float> V, bool Decay)> _state = [];

    /// <param name="applyWeightDecay">Which parameters decay (HF Trainer exempts biases and norm weights); all when null.</param>
    public AdamW(IEnumerable<Parameter> parameters, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 1e-2f, Predicate<Parameter>? applyWeightDecay = null)
    {
        foreach (var p in parameters)
            if (p.RequiresGrad)
                _state.Add((p, new NativeBuffer<float>(p.Length), new NativeBuffer<float>(p.Length), applyWeightDecay?.Invoke(p) ?? true));
        LearningRate = learningRate;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
    }

    public float LearningRate { get; set; }
    public float Beta1 { get; }
    public float Beta2 { get; }
    public float Eps { get; }
    public float WeightDecay { get; }

    /// <summary>Steps taken (t in the bias corrections); settable when restoring a checkpoint.</summary>
    public long StepCount { get; set; }

    public IReadOnlyList<Parameter> Parameters => _state.Select(s => s.Parameter).ToList();

    /// <summary>First-moment buffer of a parameter (for checkpoints).</summary>
    public NativeBuffer<float> FirstMoment(Parameter p) => Find(p).M;

    /// <summary>Second-moment buffer of a parameter (for checkpoints).</summary>
    public NativeBuffer<float> SecondMoment(Parameter p) => Find(p).V;

    public void Step()
    {
        StepCount++;
        float lr = LearningRate;
        float stepSize = (float)(lr / (1 - Math.Pow(Beta1, StepCount)));
        float rsqrtCorrection2 = (float)(1 / Math.Sqrt(1 - Math.Pow(Beta2, StepCount)));
        float decay = 1f - lr * WeightDecay;
        foreach (var (p, m, v, decays) in _state)
            Update(p.Data, p.Grad, m.Pointer, v.Pointer, p.Length, decays ? decay : 1f, Beta1, Beta2, Eps, stepSize, rsqrtCorrection2);
    }

    /// <summary>
    /// torch.nn.utils.clip_grad_norm_: the global L2 norm of all trained gradients; when it exceeds
    /// maxNorm every gradient is scaled by maxNorm/(norm + 1e-6). Returns the norm before clipping.
    /// </summary>
    public float ClipGradNorm(float maxNorm) => GradientNorm.Clip(_state.Select(s => s.Parameter).ToList(), maxNorm);

    /// <summary>exp_avg and exp_avg_sq per parameter (f32, by parameter name), the step in the metadata.</summary>
    public void SaveState(string path) =>
        OptimizerStateFile.Write(path, "adamw", StepCount, _state.SelectMany(s => new[]
        {
            OptimizerStateFile.Entry(s.Parameter.Name + ".exp_avg", DType.F32, s.Parameter.Length, s.M.Pointer),
            OptimizerStateFile.Entry(s.Parameter.Name + ".exp_avg_sq", DType.F32, s.Parameter.Length, s.V.Pointer),
        }));

    public void LoadState(string path)
    {
        var (file, step) = OptimizerStateFile.Open(path, "adamw");
        using (file)
            foreach (var s in _state)
            {
                OptimizerStateFile.Read(file, s.Parameter.Name + ".exp_avg", DType.F32, s.Parameter.Length, s.M.Pointer);
                OptimizerStateFile.Read(file, s.Parameter.Name + ".exp_avg_sq", DType.F32, s.Parameter.Length, s.V.Pointer);
            }
        StepCount = step;
    }

    public void ZeroGrad()
    {
        foreach (var s in _state) s.Parameter.ZeroGrad();
    }

    /// <summary>One flat loop over a parameter: p (n), g (n), m (n), v (n) updated in place.</summary>
    private static void Update(float* p, float* g, float* m, float* v, long n,
        float decay, float beta1, float beta2, float eps, float stepSize, float rsqrtCorrection2)
    {
        long i = 0;
        if (Simd.Use512)
        {
            for (; i <= n - 16; i += 16)
            {
                var gi = Vector512.Load(g + i);
                var mi = Vector512.Load(m + i) * beta1 + gi * (1f - beta1);
                var vi = Vector512.Load(v + i) * beta2 + gi * gi * (1f - beta2);
                mi.Store(m + i);
                vi.Store(v + i);
                var denom = Vector512.Sqrt(vi) * rsqrtCorrection2 + Vector512.Create(eps);
                (Vector512.Load(p + i) * decay - mi / denom * stepSize).Store(p + i);
            }
        }
        else if (Simd.Use256)
        {
            for (; i <= n - 8; i += 8)
            {
                var gi = Vector256.Load(g + i);
                var mi = Vector256.Load(m + i) * beta1 + gi * (1f - beta1);
                var vi = Vector256.Load(v + i) * beta2 + gi * gi * (1f - beta2);
                mi.Store(m + i);
                vi.Store(v + i);
                var denom = Vector256.Sqrt(vi) * rsqrtCorrection2 + Vector256.Create(eps);
                (Vector256.Load(p + i) * decay - mi / denom * stepSize).Store(p + i);
            }
        }
        for (; i < n; i++)
        {
            float gi = g[i];
            float mi = m[i] = m[i] * beta1 + gi * (1f - beta1);
            float vi = v[i] = v[i] * beta2 + gi * gi * (1f - beta2);
            p[i] = p[i] * decay - mi / (MathF.Sqrt(vi) * rsqrtCorrection2 + eps) * stepSize;
        }
    }

    private (Parameter Parameter, NativeBuffer<float> M, NativeBuffer<float> V, bool Decay) Find(Parameter p)
    {
        foreach (var s in _state) if (ReferenceEquals(s.Parameter, p)) return s;
        throw new ArgumentException($"Parameter '{p.Name}' is not trained by this optimizer (frozen or not registered).", nameof(p));
    }

    public void Dispose()
    {
        foreach (var (_, m, v, _) in _state)
        {
            m.Dispose();
            v.Dispose();
        }
        _state.Clear();
    }
}
