using PeftSharp.Autograd;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Optimizers;

/// <summary>
/// bitsandbytes' 8-bit AdamW (<c>optim: adamw_8bit</c>, <c>adamw_bnb_8bit</c>, <c>paged_adamw_8bit</c>; paging only
/// changes where the state lives, so all three are this): blockwise-quantized state in blocks of 256,
/// the first moment with the signed dynamic map, the second with the unsigned one
/// (<c>create_dynamic_map(signed=False)</c>), one f32 absmax per block. Parameters with fewer than
/// 4096 elements (<c>min_8bit_size</c>) keep f32 state. Per block, as the blockwise kernel does: dequantize
/// m and v, update them in f32 (m = β1·m + (1-β1)·g, v = β2·v + (1-β2)·g²), update the parameter from those
/// f32 values (decoupled decay p·(1 - lr·wd), then p -= lr/(1-β1ᵗ)·m/(√v/√(1-β2ᵗ) + eps)), then requantize
/// with the block's new absmax.
/// </summary>
public sealed unsafe class AdamW8bit : IOptimizer
{
    public const int BlockSize = 256, MinQuantizedSize = 4096;
    private static readonly float[] SignedCode = DynamicMap.Create(signed: true);
    private static readonly float[] UnsignedCode = DynamicMap.Create(signed: false);

    private sealed class State(Parameter p, bool decays)
    {
        public readonly Parameter Parameter = p;
        public readonly bool Decays = decays;
        public readonly bool Quantized = p.Length >= MinQuantizedSize;
        public NativeBuffer<float>? M32, V32;
        public NativeBuffer<byte>? M8, V8;
        public NativeBuffer<float>? AbsMaxM, AbsMaxV;
        public long Blocks => (Parameter.Length + BlockSize - 1) / BlockSize;
    }

    private readonly List<State> _state = [];

    public AdamW8bit(IEnumerable<Parameter> parameters, float learningRate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
        float eps = 1e-8f, float weightDecay = 1e-2f, Predicate<Parameter>? applyWeightDecay = null)
    {
        foreach (var p in parameters)
        {
            if (!p.RequiresGrad) continue;
            var s = new State(p, applyWeightDecay?.Invoke(p) ?? true);
            if (s.Quantized)
            {
                s.M8 = new NativeBuffer<byte>(p.Length);
                s.V8 = new NativeBuffer<byte>(p.Length);
                s.AbsMaxM = new NativeBuffer<float>(s.Blocks);
                s.AbsMaxV = new NativeBuffer<float>(s.Blocks);
                // Zero state: the code of 0 in each map (absmax 0 makes every value 0 anyway).
                s.M8.Span.Fill(DynamicMap.QuantizeValue(SignedCode, 0f));
                s.V8.Span.Fill(DynamicMap.QuantizeValue(UnsignedCode, 0f));
            }
            else
            {
                s.M32 = new NativeBuffer<float>(p.Length);
                s.V32 = new NativeBuffer<float>(p.Length);
            }
            _state.Add(s);
        }
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
    public long StepCount { get; set; }
    public IReadOnlyList<Parameter> Parameters => _state.Select(s => s.Parameter).ToList();

    /// <summary>The first and second moments of a parameter, dequantized (for tests and inspection).</summary>
    public (float[] M, float[] V) Moments(Parameter p)
    {
        var s = _state.Find(x => ReferenceEquals(x.Parameter, p)) ?? throw new ArgumentException($"'{p.Name}' is not trained by this optimizer.");
        var m = new float[p.Length];
        var v = new float[p.Length];
        if (!s.Quantized)
        {
            s.M32!.Span.CopyTo(m);
            s.V32!.Span.CopyTo(v);
            return (m, v);
        }
        DynamicMap.DequantizeBlockwise(s.M8!.Span, s.AbsMaxM!.Span, BlockSize, SignedCode, m);
        DynamicMap.DequantizeBlockwise(s.V8!.Span, s.AbsMaxV!.Span, BlockSize, UnsignedCode, v);
        return (m, v);
    }

    public void Step()
    {
        StepCount++;
        float lr = LearningRate;
        float stepSize = (float)(lr / (1 - Math.Pow(Beta1, StepCount)));
        float rsqrtCorrection2 = (float)(1 / Math.Sqrt(1 - Math.Pow(Beta2, StepCount)));
        Span<float> m = stackalloc float[BlockSize];
        Span<float> v = stackalloc float[BlockSize];
        foreach (var s in _state)
        {
            var p = s.Parameter;
            float decay = s.Decays ? 1f - lr * WeightDecay : 1f;
            if (!s.Quantized)
            {
                UpdateBlock(p.Data, p.Grad, s.M32!.Pointer, s.V32!.Pointer, (int)p.Length, decay, stepSize, rsqrtCorrection2);
                continue;
            }
            for (long b = 0; b < s.Blocks; b++)
            {
                long start = b * BlockSize;
                int n = (int)Math.Min(BlockSize, p.Length - start);
                byte* qm = s.M8!.Pointer + start, qv = s.V8!.Pointer + start;
                float am = s.AbsMaxM!.Pointer[b], av = s.AbsMaxV!.Pointer[b];
                for (int i = 0; i < n; i++)
                {
                    m[i] = SignedCode[qm[i]] * am;
                    v[i] = UnsignedCode[qv[i]] * av;
                }
                fixed (float* pm = m, pv = v)
                    UpdateBlock(p.Data + start, p.Grad + start, pm, pv, n, decay, stepSize, rsqrtCorrection2);
                float newM = 0f, newV = 0f;
                for (int i = 0; i < n; i++)
                {
                    newM = MathF.Max(newM, MathF.Abs(m[i]));
                    newV = MathF.Max(newV, v[i]);
                }
                s.AbsMaxM.Pointer[b] = newM;
                s.AbsMaxV.Pointer[b] = newV;
                float im = 1f / MathF.Max(newM, 1e-38f), iv = 1f / MathF.Max(newV, 1e-38f);
                for (int i = 0; i < n; i++)
                {
                    qm[i] = DynamicMap.QuantizeValue(SignedCode, Math.Clamp(m[i] * im, -1f, 1f));
                    qv[i] = DynamicMap.QuantizeValue(UnsignedCode, Math.Clamp(v[i] * iv, 0f, 1f));
                }
            }
        }
    }

    private void UpdateBlock(float* p, float* g, float* m, float* v, int n, float decay, float stepSize, float rsqrtCorrection2)
    {
        float b1 = Beta1, b2 = Beta2, eps = Eps;
        for (int i = 0; i < n; i++)
        {
            float gi = g[i];
            float mi = m[i] = m[i] * b1 + gi * (1f - b1);
            float vi = v[i] = v[i] * b2 + gi * gi * (1f - b2);
            p[i] = p[i] * decay - mi / (MathF.Sqrt(vi) * rsqrtCorrection2 + eps) * stepSize;
        }
    }

    public void ZeroGrad()
    {
        foreach (var s in _state) s.Parameter.ZeroGrad();
    }

    /// <summary>state1/state2 (u8 codes or f32) and absmax1/absmax2 per parameter, as bitsandbytes names them.</summary>
    public void SaveState(string path) =>
        OptimizerStateFile.Write(path, "adamw_8bit", StepCount, _state.SelectMany(Entries));

    private static List<Formats.Safetensors.SafetensorsEntry> Entries(State s)
    {
        string n = s.Parameter.Name;
        if (!s.Quantized)
            return
            [
                OptimizerStateFile.Entry(n + ".state1", DType.F32, s.Parameter.Length, s.M32!.Pointer),
                OptimizerStateFile.Entry(n + ".state2", DType.F32, s.Parameter.Length, s.V32!.Pointer),
            ];
        return
        [
            OptimizerStateFile.Entry(n + ".state1", DType.U8, s.Parameter.Length, s.M8!.Pointer),
            OptimizerStateFile.Entry(n + ".state2", DType.U8, s.Parameter.Length, s.V8!.Pointer),
            OptimizerStateFile.Entry(n + ".absmax1", DType.F32, s.Blocks, s.AbsMaxM!.Pointer),
            OptimizerStateFile.Entry(n + ".absmax2", DType.F32, s.Blocks, s.AbsMaxV!.Pointer),
        ];
    }

    public void LoadState(string path)
    {
        var (file, step) = OptimizerStateFile.Open(path, "adamw_8bit");
        using (file)
            foreach (var s in _state)
            {
                string n = s.Parameter.Name;
                if (!s.Quantized)
                {
                    OptimizerStateFile.Read(file, n + ".state1", DType.F32, s.Parameter.Length, s.M32!.Pointer);
                    OptimizerStateFile.Read(file, n + ".state2", DType.F32, s.Parameter.Length, s.V32!.Pointer);
                    continue;
                }
                OptimizerStateFile.Read(file, n + ".state1", DType.U8, s.Parameter.Length, s.M8!.Pointer);
                OptimizerStateFile.Read(file, n + ".state2", DType.U8, s.Parameter.Length, s.V8!.Pointer);
                OptimizerStateFile.Read(file, n + ".absmax1", DType.F32, s.Blocks, s.AbsMaxM!.Pointer);
                OptimizerStateFile.Read(file, n + ".absmax2", DType.F32, s.Blocks, s.AbsMaxV!.Pointer);
            }
        StepCount = step;
    }

    public void Dispose()
    {
        foreach (var s in _state)
        {
            s.M32?.Dispose();
            s.V32?.Dispose();
            s.M8?.Dispose();
            s.V8?.Dispose();
            s.AbsMaxM?.Dispose();
            s.AbsMaxV?.Dispose();
        }
        _state.Clear();
    }
}
