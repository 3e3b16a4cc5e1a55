using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Optimizers;

/// <summary>
/// Adafactor as transformers runs it for optim "adafactor" (scale_parameter and relative_step off, the learning rate
/// given, no first moment, eps (1e-30, 1e-3), clip_threshold 1, decay_rate −0.8). With t the step,
/// β2ₜ = 1 − t^−0.8 and u = g² + 1e-30: a matrix [R, C] keeps row means r ← β2ₜ·r + (1−β2ₜ)·mean_c(u) and column means
/// c ← β2ₜ·c + (1−β2ₜ)·mean_r(u) and updates by g / √(r_i/mean(r) · c_j); a vector keeps v ← β2ₜ·v + (1−β2ₜ)·u and updates
/// by g/√v. The update is divided by max(1, RMS(update)/clip_threshold), scaled by lr, and p ← p − wd·lr·p − update.
/// </summary>
public sealed unsafe class Adafactor : IOptimizer
{
    private const float Eps1 = 1e-30f, ClipThreshold = 1f, DecayRate = -0.8f;
    private readonly List<State> _state = [];

    private sealed class State(Parameter p, bool decay)
    {
        public Parameter Parameter { get; } = p;
        public bool Decay { get; } = decay;
        public int Rows { get; } = p.Shape.Length >= 2 ? (int)(p.Length / p.Shape[^1]) : 0;
        public int Columns { get; } = p.Shape.Length >= 2 ? p.Shape[^1] : 0;
        public bool Factored => Rows > 0;
        public float[] Row { get; } = p.Shape.Length >= 2 ? new float[p.Length / p.Shape[^1]] : [];
        public float[] Column { get; } = p.Shape.Length >= 2 ? new float[p.Shape[^1]] : [];
        public float[] Full { get; } = p.Shape.Length >= 2 ? [] : new float[p.Length];
    }

    public Adafactor(IEnumerable<Parameter> parameters, float learningRate, float weightDecay = 0f, Predicate<Parameter>? applyWeightDecay = null)
    {
        foreach (var p in parameters)
            if (p.RequiresGrad) _state.Add(new State(p, applyWeightDecay?.Invoke(p) ?? true));
        LearningRate = learningRate;
        WeightDecay = weightDecay;
    }

    public float LearningRate { get; set; }
    public float WeightDecay { get; }
    public long StepCount { get; set; }
    public IReadOnlyList<Parameter> Parameters => _state.Select(s => s.Parameter).ToList();

    public void Step()
    {
        StepCount++;
        float beta2t = 1f - MathF.Pow(StepCount, DecayRate);
        float lr = LearningRate;
        foreach (var s in _state)
        {
            var p = s.Parameter;
            int n = checked((int)p.Length);
            var g = new ReadOnlySpan<float>(p.Grad, n);
            var update = new float[n];
            if (s.Factored)
            {
                int rows = s.Rows, cols = s.Columns;
                var colSum = new double[cols];
                for (int r = 0; r < rows; r++)
                {
                    double rowSum = 0;
                    for (int c = 0; c < cols; c++)
                    {
                        float u = g[r * cols + c] * g[r * cols + c] + Eps1;
                        rowSum += u;
                        colSum[c] += u;
                    }
                    s.Row[r] = s.Row[r] * beta2t + (float)(rowSum / cols) * (1f - beta2t);
                }
                for (int c = 0; c < cols; c++) s.Column[c] = s.Column[c] * beta2t + (float)(colSum[c] / rows) * (1f - beta2t);
                double rowMean = 0;
                foreach (float v in s.Row) rowMean += v;
                rowMean /= rows;
                for (int r = 0; r < rows; r++)
                {
                    float rFactor = 1f / MathF.Sqrt((float)(s.Row[r] / rowMean));
                    for (int c = 0; c < cols; c++) update[r * cols + c] = rFactor * (1f / MathF.Sqrt(s.Column[c])) * g[r * cols + c];
                }
            }
            else
            {
                for (int i = 0; i < n; i++)
                {
                    s.Full[i] = s.Full[i] * beta2t + (g[i] * g[i] + Eps1) * (1f - beta2t);
                    update[i] = g[i] / MathF.Sqrt(s.Full[i]);
                }
            }
            double sq = 0;
            foreach (float u in update) sq += (double)u * u;
            float rms = (float)Math.Sqrt(sq / n);
            float scale = lr / Math.Max(1f, rms / ClipThreshold);
            float decay = s.Decay && WeightDecay != 0 ? WeightDecay * lr : 0f;
            var data = new Span<float>(p.Data, n);
            for (int i = 0; i < n; i++) data[i] = data[i] - decay * data[i] - update[i] * scale;
        }
    }

    public void ZeroGrad()
    {
        foreach (var s in _state) s.Parameter.ZeroGrad();
    }

    /// <summary>exp_avg_sq_row / exp_avg_sq_col (matrices) or exp_avg_sq (vectors) per parameter, the step in the metadata.</summary>
    public void SaveState(string path)
    {
        var entries = new List<Formats.Safetensors.SafetensorsEntry>();
        foreach (var s in _state)
        {
            if (s.Factored)
            {
                entries.Add(Formats.Safetensors.SafetensorsEntry.FromFloat32(s.Parameter.Name + ".exp_avg_sq_row", [s.Rows], s.Row));
                entries.Add(Formats.Safetensors.SafetensorsEntry.FromFloat32(s.Parameter.Name + ".exp_avg_sq_col", [s.Columns], s.Column));
            }
            else entries.Add(Formats.Safetensors.SafetensorsEntry.FromFloat32(s.Parameter.Name + ".exp_avg_sq", [s.Full.Length], s.Full));
        }
        OptimizerStateFile.Write(path, "adafactor", StepCount, entries);
    }

    public void LoadState(string path)
    {
        var (file, step) = OptimizerStateFile.Open(path, "adafactor");
        using (file)
            foreach (var s in _state)
            {
                if (s.Factored)
                {
                    fixed (float* r = s.Row) OptimizerStateFile.Read(file, s.Parameter.Name + ".exp_avg_sq_row", DType.F32, s.Rows, r);
                    fixed (float* c = s.Column) OptimizerStateFile.Read(file, s.Parameter.Name + ".exp_avg_sq_col", DType.F32, s.Columns, c);
                }
                else
                    fixed (float* v = s.Full) OptimizerStateFile.Read(file, s.Parameter.Name + ".exp_avg_sq", DType.F32, s.Full.Length, v);
            }
        StepCount = step;
    }

    public void Dispose() => _state.Clear();
}
