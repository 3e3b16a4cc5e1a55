using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Optimizers;

/// <summary>torch.optim.SGD with momentum 0 (<c>optim: sgd</c>): p -= lr·(g + wd·p), weight decay as an L2 term on the decaying parameters. No state beyond the step.</summary>
public sealed unsafe class Sgd : IOptimizer
{
    private readonly List<(Parameter Parameter, bool Decays)> _params = [];

    public Sgd(IEnumerable<Parameter> parameters, float learningRate, float weightDecay = 0f, Predicate<Parameter>? applyWeightDecay = null)
    {
        foreach (var p in parameters)
            if (p.RequiresGrad) _params.Add((p, applyWeightDecay?.Invoke(p) ?? true));
        LearningRate = learningRate;
        WeightDecay = weightDecay;
    }

    public float LearningRate { get; set; }
    public float WeightDecay { get; }
    public long StepCount { get; set; }
    public IReadOnlyList<Parameter> Parameters => _params.Select(p => p.Parameter).ToList();

    public void Step()
    {
        StepCount++;
        foreach (var (p, decays) in _params)
        {
            if (decays && WeightDecay != 0f) Elementwise.Axpy(p.Length, WeightDecay, p.Data, p.Grad);
            Elementwise.Axpy(p.Length, -LearningRate, p.Grad, p.Data);
        }
    }

    public void ZeroGrad()
    {
        foreach (var (p, _) in _params) p.ZeroGrad();
    }

    public void SaveState(string path) => OptimizerStateFile.Write(path, "sgd", StepCount, []);

    public void LoadState(string path)
    {
        var (file, step) = OptimizerStateFile.Open(path, "sgd");
        file.Dispose();
        StepCount = step;
    }

    public void Dispose() => _params.Clear();
}
