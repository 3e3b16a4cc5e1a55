using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Optimizers;

/// <summary>An optimizer over the trainable parameters, with a state that a checkpoint saves and restores exactly.</summary>
public interface IOptimizer : IDisposable
{
    float LearningRate { get; set; }

    /// <summary>Steps taken (t in bias corrections).</summary>
    long StepCount { get; set; }

    IReadOnlyList<Parameter> Parameters { get; }

    void Step();

    void ZeroGrad();

    /// <summary>Writes the state (moments, step) to <paramref name="path"/> (a safetensors file).</summary>
    void SaveState(string path);

    /// <summary>Restores what <see cref="SaveState"/> wrote; names and shapes must match.</summary>
    void LoadState(string path);
}

/// <summary>Gradient-norm helpers shared by the optimizers.</summary>
public static unsafe class GradientNorm
{
    /// <summary>The global L2 norm of the gradients (summed in double, parameter by parameter).</summary>
    public static float Compute(IEnumerable<Parameter> parameters)
    {
        double sumSquares = 0;
        foreach (var p in parameters) sumSquares += Elementwise.Dot(p.Length, p.Grad, p.Grad);
        return (float)Math.Sqrt(sumSquares);
    }

    /// <summary>torch.nn.utils.clip_grad_norm_: scale every gradient by maxNorm/(norm + 1e-6) when that is below 1. Returns the norm before clipping.</summary>
    public static float Clip(IEnumerable<Parameter> parameters, float maxNorm)
    {
        var list = parameters as IReadOnlyList<Parameter> ?? parameters.ToList();
        float norm = Compute(list);
        float coefficient = maxNorm / (norm + 1e-6f);
        if (maxNorm > 0 && coefficient < 1f)
            foreach (var p in list) Elementwise.Scale(p.Length, coefficient, p.Grad, p.Grad);
        return norm;
    }

    /// <summary>HF Trainer's decay rule: no weight decay on biases and on 1-D parameters (norm weights).</summary>
    public static bool Decays(Parameter p) => p.Shape.Length >= 2 && !p.Name.EndsWith("bias", StringComparison.Ordinal);
}
