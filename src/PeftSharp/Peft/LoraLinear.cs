using System.Numerics.Tensors;
using Tensor = PeftSharp.Tensors.Tensor;
using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Peft;

/// <summary>
/// PEFT's lora.Linear: wraps a frozen base layer by composition and adds named adapters,
/// y = base(x) + scaling·B(A(dropout(x))) for each active adapter (outputs summed), or DoRA's
/// y = base(x) + (m/‖W + s·B·A‖ − 1)·(base(x) − b) + (m/‖W + s·B·A‖)·s·B(A(x)) with the row norm
/// detached. The LoRA path runs as two GEMMs, h = s·x·Aᵀ (rows × r) then y += h·Bᵀ, accumulated
/// into the base output in place; the base layer's backward must therefore not read its own output
/// (true of every linear layer: it reads x and W). Disabled adapters give the base output exactly.
/// </summary>
public sealed unsafe class LoraLinear : IWrappedLinear, IRandomStreams
{
    private readonly Dictionary<string, LoraAdapter> _adapters = new(StringComparer.Ordinal);
    private readonly List<string> _order = [];
    private readonly List<string> _merged = [];
    private readonly Dictionary<string, float[]> _mergedDoraNorms = new(StringComparer.Ordinal);
    private List<string> _active = [];
    private Parameter? _bias;
    private float[]? _originalBias;

    public LoraLinear(IBaseLinear baseLayer)
    {
        BaseLayer = baseLayer;
    }

    public IBaseLinear BaseLayer { get; }
    public LinearModuleInfo Info => BaseLayer.Info;

    /// <summary>The adapters in the order they were added.</summary>
    public IReadOnlyList<LoraAdapter> Adapters => _order.Select(n => _adapters[n]).ToList();
    public bool HasAdapter(string name) => _adapters.ContainsKey(name);
    public LoraAdapter this[string name] => _adapters.TryGetValue(name, out var a) ? a
        : throw new PeftSharpException($"{Info.Name}: no adapter \"{name}\" (adapters: {string.Join(", ", _order)}).");

    /// <summary>The adapters the forward adds (several are summed).</summary>
    public IReadOnlyList<string> ActiveAdapters => _active;

    /// <summary>With adapters disabled the layer computes the base output exactly (merged adapters are unmerged first, as PEFT does).</summary>
    public bool AdaptersDisabled { get; set; }

    public IReadOnlyList<string> MergedAdapters => _merged;
    public bool Merged => _merged.Count > 0;

    /// <summary>The trainable bias (bias "all" / "lora_only"), named `&lt;module&gt;.base_layer.bias`, or null.</summary>
    public Parameter? TrainableBias => _bias;

    /// <summary>The base weight with the active adapters folded in (unless they are disabled or already merged).</summary>
    public bool TryReadEffectiveWeight(Span<float> destination, Span<float> scratch)
    {
        if (AdaptersDisabled || Merged) return false;
        MergedWeight(ActiveAdapters, destination, scratch);
        return true;
    }

    public Parameter? EffectiveBias => _bias ?? BaseLayer.Bias;

    public IEnumerable<Parameter> Parameters =>
        BaseLayer.Parameters.Concat(_order.SelectMany(n => _adapters[n].Parameters)).Concat(_bias == null ? [] : [_bias]);

    /// <summary>Each adapter's dropout stream restarts from <paramref name="key"/> folded with "&lt;module&gt;/&lt;adapter&gt;" (see <see cref="IRandomStreams"/>).</summary>
    public void Reseed(ulong key)
    {
        foreach (var name in _order)
        {
            var ad = _adapters[name];
            if (ad.Dropout > 0) ad.DropoutRng.Reset(Rng.FoldIn(key, Rng.StreamId(ad.Module + "/" + ad.Name)));
        }
    }

    /// <summary>
    /// Adds an adapter (PEFT's update_layer). init: "true" → A kaiming-uniform(a=√5), B = 0;
    /// "gaussian" → A ~ N(0, 1/r), B = 0; "false" → both nn.Linear's default init. With DoRA the
    /// magnitude starts as the row norms of W + s·B·A.
    /// </summary>
    public LoraAdapter AddAdapter(string name, int rank, double scaling, float dropout, string init, bool useDora, bool trainable, Rng rng)
    {
        if (_adapters.ContainsKey(name)) throw new PeftSharpException($"{Info.Name}: adapter \"{name}\" already exists.");
        if (rank <= 0) throw new PeftSharpException($"{Info.Name}: LoRA rank must be positive, got {rank}.");
        int n = Info.OutFeatures, k = Info.InFeatures;
        var a = Parameter.Create(LoraAdapter.ParameterName(Info.Name, "lora_A", name), [rank, k], trainable);
        var b = Parameter.Create(LoraAdapter.ParameterName(Info.Name, "lora_B", name), [n, rank], trainable);
        switch (init)
        {
            case "true": rng.FillKaimingUniform(a.AsSpan(), k); break;
            case "gaussian": rng.FillNormal(a.AsSpan(), 0f, 1f / rank); break;
            case "false": rng.FillKaimingUniform(a.AsSpan(), k); rng.FillKaimingUniform(b.AsSpan(), rank); break;
            default: throw new PeftSharpException($"{Info.Name}: init_lora_weights \"{init}\" is not supported; use true, false or \"gaussian\".");
        }
        Parameter? magnitude = null;
        if (useDora)
        {
            magnitude = Parameter.Create(LoraAdapter.ParameterName(Info.Name, "lora_magnitude_vector", name), [n], trainable);
            WeightNorm(a, b, scaling, magnitude.Data);
        }
        var adapter = new LoraAdapter(Info.Name, name, rank, scaling, dropout, a, b, magnitude, rng.Split());
        _adapters[name] = adapter;
        _order.Add(name);
        return adapter;
    }

    /// <summary>Recomputes DoRA's magnitude as the row norms of W + s·B·A (after A and B were loaded or changed).</summary>
    public void ResetDoraMagnitude(string name)
    {
        var ad = this[name];
        if (ad.Magnitude == null) throw new PeftSharpException($"{Info.Name}: adapter \"{name}\" does not use DoRA.");
        WeightNorm(ad.A, ad.B, ad.Scaling, ad.Magnitude.Data);
    }

    /// <summary>Gives an adapter a DoRA magnitude vector whose values are set by the caller (loading).</summary>
    internal void AttachMagnitude(string name, Parameter magnitude)
    {
        var ad = this[name];
        _adapters[name] = new LoraAdapter(ad.Module, ad.Name, ad.Rank, ad.Scaling, ad.Dropout, ad.A, ad.B, magnitude, ad.DropoutRng);
    }

    public void SetActiveAdapters(IEnumerable<string> names)
    {
        var list = names.ToList();
        foreach (var n in list) _ = this[n];
        _active = list;
    }

    public void DeleteAdapter(string name)
    {
        if (_merged.Contains(name)) throw new PeftSharpException($"{Info.Name}: adapter \"{name}\" is merged; unmerge it before deleting it.");
        var ad = this[name];
        _adapters.Remove(name);
        _order.Remove(name);
        _active = _active.Where(a => a != name).ToList();
        ad.Dispose();
    }

    /// <summary>Gives the layer a trainable copy of its base bias (bias "all" / "lora_only"); a no-op without a bias.</summary>
    public void EnableTrainableBias(bool trainable = true)
    {
        if (_bias != null || BaseLayer.Bias is not { } b) return;
        _originalBias = b.AsSpan().ToArray();
        _bias = Parameter.Create(Info.Name + ".base_layer.bias", [Info.OutFeatures], trainable);
        b.AsSpan().CopyTo(_bias.AsSpan());
    }

    public Tensor Forward(Ops ops, Tensor x)
    {
        if (AdaptersDisabled)
        {
            if (Merged) Unmerge();
            return ApplyBias(ops, BaseLayer.Forward(ops, x));
        }
        if (ops.RowAdapters is { } rowAdapters) return ForwardRows(ops, x, rowAdapters);
        Tensor y;
        // DoRA's magnitude reads the base output, so a product marked unread (Tape.UnreadOutput) is computed for it.
        if (!Merged && _active.Any(name => _adapters[name].UseDora))
            using (ops.Tape.ReadOutput()) y = BaseLayer.Forward(ops, x);
        else y = BaseLayer.Forward(ops, x);
        using var part = StepProfiler.Enter(StepPart.Lora);
        if (!Merged)
            foreach (var name in _active)
            {
                var ad = _adapters[name];
                y = ad.UseDora ? DoraForward(ops, x, y, ad) : LoraForward(ops, x, y, ad);
            }
        return ApplyBias(ops, y);
    }

    /// <summary>
    /// PEFT's mixed-batch forward (<c>adapter_names</c>), for inference: the base output for every row in one GEMM, then
    /// each run of consecutive rows that names an adapter of this layer adds that adapter's s·B·A·x. Plain LoRA only (no
    /// dropout, DoRA, merged weights or trainable bias: a server refuses such adapters before they get here).
    /// </summary>
    private Tensor ForwardRows(Ops ops, Tensor x, string?[] rowAdapters)
    {
        int rows = x.Rows, n = Info.OutFeatures, k = Info.InFeatures;
        if (rowAdapters.Length != rows) throw new ArgumentException($"{Info.Name}: {rowAdapters.Length} row adapters for {rows} rows.");
        if (Merged) throw new PeftSharpException($"{Info.Name}: a mixed-adapter batch needs unmerged adapters (merged: {string.Join(", ", _merged)}).");
        var y = BaseLayer.Forward(ops, x);
        for (int start = 0, end; start < rows; start = end)
        {
            string? name = rowAdapters[start];
            for (end = start + 1; end < rows && rowAdapters[end] == name; end++) { }
            if (name == null || !_adapters.TryGetValue(name, out var ad)) continue;
            if (ad.UseDora) throw new PeftSharpException($"{Info.Name}: adapter \"{name}\" uses DoRA, which a mixed-adapter batch does not support.");
            int m = end - start, r = ad.Rank;
            float* h = ops.Tape.Scratch((long)m * r);                           // (m, r) = s·x·Aᵀ
            Gemm.LinearForward(x.Data + (long)start * k, ad.A.Data, null, h, m, r, k);
            Elementwise.Scale((long)m * r, (float)ad.Scaling, h, h);
            Gemm.Compute(false, true, m, n, r, h, r, ad.B.Data, r, y.Data + (long)start * n, n, accumulate: true); // y += h·Bᵀ
        }
        return y;
    }

    private Tensor LoraForward(Ops ops, Tensor x, Tensor y, LoraAdapter ad)
    {
        var tape = ops.Tape;
        var xd = ad.Dropout > 0 ? ops.Dropout(x, ad.Dropout, ad.DropoutRng) : x;
        int m = x.Rows, n = Info.OutFeatures, k = Info.InFeatures, r = ad.Rank;
        float s = (float)ad.Scaling;
        Parameter a = ad.A, b = ad.B;
        float* h = tape.Scratch((long)m * r);                                   // (m, r) = s·xd·Aᵀ
        Gemm.LinearForward(xd.Data, a.Data, null, h, m, r, k);
        Elementwise.Scale((long)m * r, s, h, h);
        Gemm.Compute(false, true, m, n, r, h, r, b.Data, r, y.Data, n, accumulate: true); // y += h·Bᵀ
        bool needs = tape.AnyRequiresGrad(xd, a, b);
        var z = new Tensor(y.Shape, y.Data, needs || y.RequiresGrad, y);
        if (needs)
            tape.Record(() =>
            {
                float* dz = z.Grad;                                              // (m, n)
                if (dz == null) return;
                if (b.RequiresGrad) Gemm.LinearBackwardWeight(dz, h, b.Grad, m, n, r, accumulate: true);
                if (!a.RequiresGrad && !xd.RequiresGrad) return;
                float* dh = tape.Scratch((long)m * r);                          // (m, r) = s·dz·B
                Gemm.LinearBackwardInput(dz, b.Data, dh, m, n, r, accumulate: false);
                Elementwise.Scale((long)m * r, s, dh, dh);
                if (a.RequiresGrad) Gemm.LinearBackwardWeight(dh, xd.Data, a.Grad, m, r, k, accumulate: true);
                if (xd.RequiresGrad) Gemm.LinearBackwardInput(dh, a.Data, tape.GradOf(xd), m, r, k, accumulate: true);
            });
        return z;
    }

    private Tensor DoraForward(Ops ops, Tensor x, Tensor y, LoraAdapter ad)
    {
        var tape = ops.Tape;
        bool dropout = tape.Training && ad.Dropout > 0;
        var xd = dropout ? ops.Dropout(x, ad.Dropout, ad.DropoutRng) : x;
        int m = x.Rows, n = Info.OutFeatures, k = Info.InFeatures, r = ad.Rank;
        float s = (float)ad.Scaling;
        Parameter a = ad.A, b = ad.B, mag = ad.Magnitude!;
        float* w = tape.Scratch((long)n * k);                                    // (n, k) base weight
        BaseLayer.ReadWeight(w);
        float* norm = tape.Scratch(n);                                          // ‖W + s·B·A‖ per row, detached
        WeightNorm(w, a, b, s, norm, tape.Scratch((long)n * k));
        float* gm1 = tape.Scratch(n), gs = tape.Scratch(n);                     // m/‖·‖ − 1, s·m/‖·‖
        for (int i = 0; i < n; i++)
        {
            float g = mag.Data[i] / norm[i];
            gm1[i] = g - 1f;
            gs[i] = g * s;
        }
        float* h = tape.Scratch((long)m * r);                                   // (m, r) = xd·Aᵀ
        Gemm.LinearForward(xd.Data, a.Data, null, h, m, r, k);
        float* l = tape.Scratch((long)m * n);                                   // (m, n) = h·Bᵀ
        Gemm.Compute(false, true, m, n, r, h, r, b.Data, r, l, n, accumulate: false);
        float* baseResult = tape.Scratch((long)m * n);                          // (m, n): xd·Wᵀ, or y − bias
        if (dropout) Gemm.LinearForward(xd.Data, w, null, baseResult, m, n, k);
        else
        {
            Buffer.MemoryCopy(y.Data, baseResult, (long)m * n * 4, (long)m * n * 4);
            if (BaseLayer.Bias is { } bias)
                for (int t = 0; t < m; t++)
                {
                    var row = new Span<float>(baseResult + (long)t * n, n);
                    TensorPrimitives.Subtract(row, new ReadOnlySpan<float>(bias.Data, n), row);
                }
        }
        bool needs = tape.AnyRequiresGrad(xd, a, b) || tape.AnyRequiresGrad(mag);
        var z = tape.NewTensor(y.Shape, needs || y.RequiresGrad);
        var vgm1 = new ReadOnlySpan<float>(gm1, n);
        var vgs = new ReadOnlySpan<float>(gs, n);
        for (int t = 0; t < m; t++)
        {
            long o = (long)t * n;
            var zr = new Span<float>(z.Data + o, n);
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(baseResult + o, n), vgm1, new ReadOnlySpan<float>(y.Data + o, n), zr);
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(l + o, n), vgs, zr, zr);
        }
        if (z.RequiresGrad)
            tape.Record(() =>
            {
                float* dz = z.Grad;                                              // (m, n)
                if (dz == null) return;
                var g1 = new ReadOnlySpan<float>(gm1, n);
                var gsv = new ReadOnlySpan<float>(gs, n);
                if (y.RequiresGrad)
                {
                    // Without dropout base_result is y itself: dy = (1 + g − 1)·dz = g·dz.
                    float* dy = tape.GradOf(y);
                    for (int t = 0; t < m; t++)
                    {
                        long o = (long)t * n;
                        var dzr = new ReadOnlySpan<float>(dz + o, n);
                        var dyr = new Span<float>(dy + o, n);
                        TensorPrimitives.Add(dzr, dyr, dyr);
                        if (!dropout) TensorPrimitives.MultiplyAdd(dzr, g1, dyr, dyr);
                    }
                }
                if (mag.RequiresGrad)
                {
                    float* dm = mag.Grad;                                        // dm += Σ_t dz·(base_result + s·l) / ‖·‖
                    for (int i = 0; i < n; i++)
                    {
                        double acc = 0;
                        for (int t = 0; t < m; t++)
                        {
                            long o = (long)t * n + i;
                            acc += dz[o] * (baseResult[o] + s * l[o]);
                        }
                        dm[i] += (float)(acc / norm[i]);
                    }
                }
                if (!a.RequiresGrad && !b.RequiresGrad && !xd.RequiresGrad) return;
                float* dl = tape.Scratch((long)m * n);                          // (m, n) = g·s·dz
                for (int t = 0; t < m; t++)
                    TensorPrimitives.Multiply(new ReadOnlySpan<float>(dz + (long)t * n, n), gsv, new Span<float>(dl + (long)t * n, n));
                if (b.RequiresGrad) Gemm.LinearBackwardWeight(dl, h, b.Grad, m, n, r, accumulate: true);
                float* dh = tape.Scratch((long)m * r);                          // (m, r) = dl·B
                Gemm.LinearBackwardInput(dl, b.Data, dh, m, n, r, accumulate: false);
                if (a.RequiresGrad) Gemm.LinearBackwardWeight(dh, xd.Data, a.Grad, m, r, k, accumulate: true);
                if (!xd.RequiresGrad) return;
                float* dxd = tape.GradOf(xd);
                Gemm.LinearBackwardInput(dh, a.Data, dxd, m, r, k, accumulate: true);
                if (dropout)
                {
                    for (int t = 0; t < m; t++)                                   // dl reused: (g − 1)·dz
                        TensorPrimitives.Multiply(new ReadOnlySpan<float>(dz + (long)t * n, n), g1, new Span<float>(dl + (long)t * n, n));
                    Gemm.LinearBackwardInput(dl, w, dxd, m, n, k, accumulate: true);
                }
            });
        return z;
    }

    private Tensor ApplyBias(Ops ops, Tensor y)
    {
        if (_bias == null) return y;
        var tape = ops.Tape;
        int n = Info.OutFeatures, m = y.Rows;
        float* delta = tape.Scratch(n);                                         // trained bias − original bias
        fixed (float* b0 = _originalBias)
            TensorPrimitives.Subtract(new ReadOnlySpan<float>(_bias.Data, n), new ReadOnlySpan<float>(b0, n), new Span<float>(delta, n));
        for (int t = 0; t < m; t++)
        {
            var row = new Span<float>(y.Data + (long)t * n, n);
            TensorPrimitives.Add(row, new ReadOnlySpan<float>(delta, n), row);
        }
        var bias = _bias;
        bool needs = tape.AnyRequiresGrad(bias);
        var z = new Tensor(y.Shape, y.Data, needs || y.RequiresGrad, y);
        if (needs)
            tape.Record(() =>
            {
                if (z.Grad == null) return;
                for (int t = 0; t < m; t++) Elementwise.Axpy(n, 1f, z.Grad + (long)t * n, bias.Grad);
            });
        return z;
    }

    /// <summary>ΔW = s·B·A, f32 [out, in] (PEFT's get_delta_weight).</summary>
    public void DeltaWeight(string name, float* destination)
    {
        var ad = this[name];
        int n = Info.OutFeatures, k = Info.InFeatures;
        Gemm.Compute(false, false, n, k, ad.Rank, ad.B.Data, ad.Rank, ad.A.Data, k, destination, k, accumulate: false);
        Elementwise.Scale((long)n * k, (float)ad.Scaling, destination, destination);
    }

    /// <summary>
    /// The base weight with these adapters folded in, f32 [out, in]: W + ΔW for LoRA,
    /// (m/‖W + ΔW‖)·(W + ΔW) for DoRA. Throws naming the module when the result is not finite.
    /// </summary>
    public float[] MergedWeight(IEnumerable<string> names)
    {
        var w = new float[(long)Info.OutFeatures * Info.InFeatures];
        MergedWeight(names, w, new float[w.Length]);
        return w;
    }

    /// <summary>
    /// <see cref="MergedWeight(IEnumerable{string})"/> into <paramref name="destination"/> (out·in floats), with
    /// <paramref name="scratch"/> (at least out·in floats) holding each ΔW: for writers that reuse their buffers from layer to layer.
    /// </summary>
    public void MergedWeight(IEnumerable<string> names, Span<float> destination, Span<float> scratch)
    {
        long count = (long)Info.OutFeatures * Info.InFeatures;
        if (destination.Length != count || scratch.Length < count)
            throw new ArgumentException($"{Info.Name}: the merged weight needs {count} floats and as many scratch floats, got {destination.Length} and {scratch.Length}.");
        fixed (float* pw = destination) BaseLayer.ReadWeight(pw);
        foreach (var name in names) FoldInto(destination, scratch[..destination.Length], name, out _);
    }

    private void FoldInto(Span<float> w, Span<float> delta, string name, out float[]? doraNorm)
    {
        var ad = this[name];
        int n = Info.OutFeatures, k = Info.InFeatures;
        fixed (float* pd = delta) DeltaWeight(name, pd);
        TensorPrimitives.Add(w, delta, w);
        doraNorm = null;
        if (ad.UseDora)
        {
            doraNorm = new float[n];
            for (int i = 0; i < n; i++)
            {
                var row = w.Slice(i * k, k);
                doraNorm[i] = TensorPrimitives.Norm(row);
                TensorPrimitives.Multiply(row, ad.Magnitude!.Data[i] / doraNorm[i], row);
            }
        }
        if (HasNonFinite(w))
            throw new PeftSharpException($"{Info.Name}: merging adapter \"{name}\" gives NaN or infinite weights; the adapter seems to be broken.");
    }

    private static bool HasNonFinite(ReadOnlySpan<float> values)
    {
        foreach (float v in values) if (!float.IsFinite(v)) return true;
        return false;
    }

    /// <summary>Merges adapters (default: the active ones) into the base weight in place (PEFT's merge(safe_merge=True)).</summary>
    public void Merge(IEnumerable<string>? names = null)
    {
        var list = (names ?? _active).Where(a => !_merged.Contains(a)).ToList();
        if (list.Count == 0) return;
        if (!BaseLayer.CanModifyWeight)
            throw new PeftSharpException($"{Info.Name}: the base weight cannot be changed in place (4-bit or read-only storage); write a merged copy with PeftModel.MergeAndSave instead.");
        int n = Info.OutFeatures, k = Info.InFeatures;
        var current = new float[(long)n * k];
        fixed (float* pc = current) BaseLayer.ReadWeight(pc);
        var delta = new float[current.Length];
        foreach (var name in list)
        {
            var w = (float[])current.Clone();
            FoldInto(w, delta, name, out var norm);
            SetWeight(current, w);
            current = w;
            if (norm != null) _mergedDoraNorms[name] = norm;
            _merged.Add(name);
        }
    }

    /// <summary>Undoes <see cref="Merge"/>, last merged first; restores the base within float rounding.</summary>
    public void Unmerge()
    {
        int n = Info.OutFeatures, k = Info.InFeatures;
        var current = new float[(long)n * k];
        fixed (float* pc = current) BaseLayer.ReadWeight(pc);
        while (_merged.Count > 0)
        {
            string name = _merged[^1];
            var w = (float[])current.Clone();
            if (_mergedDoraNorms.Remove(name, out var norm))
            {
                var mag = this[name].Magnitude!;
                for (int i = 0; i < n; i++)
                {
                    var row = w.AsSpan(i * k, k);
                    TensorPrimitives.Multiply(row, norm[i] / mag.Data[i], row);
                }
            }
            var delta = new float[w.Length];
            fixed (float* pd = delta) DeltaWeight(name, pd);
            TensorPrimitives.Subtract(w, delta, w);
            SetWeight(current, w);
            current = w;
            _merged.RemoveAt(_merged.Count - 1);
        }
    }

    private void SetWeight(float[] current, float[] target)
    {
        var diff = new float[target.Length];
        TensorPrimitives.Subtract(target, current, diff);
        fixed (float* pd = diff) BaseLayer.AddToWeight(pd, 1f);
    }

    /// <summary>Writes the trained bias (bias "all" / "lora_only") into the base layer's bias.</summary>
    internal void CommitBias()
    {
        if (_bias == null || BaseLayer.Bias is not { } b) return;
        _bias.AsSpan().CopyTo(b.AsSpan());
    }

    private void WeightNorm(Parameter a, Parameter b, double scaling, float* norm)
    {
        int n = Info.OutFeatures, k = Info.InFeatures;
        using var w = new NativeBuffer<float>((long)n * k, clear: false);
        using var scratch = new NativeBuffer<float>((long)n * k, clear: false);
        BaseLayer.ReadWeight(w.Pointer);
        WeightNorm(w.Pointer, a, b, (float)scaling, norm, scratch.Pointer);
    }

    /// <summary>PEFT's get_weight_norm: ‖W + s·B·A‖ over dim 1 of [out, in]; <paramref name="scratch"/> (out·in) is overwritten.</summary>
    private void WeightNorm(float* w, Parameter a, Parameter b, float s, float* norm, float* scratch)
    {
        int n = Info.OutFeatures, k = Info.InFeatures, r = a.Shape[0];
        Gemm.Compute(false, false, n, k, r, b.Data, r, a.Data, k, scratch, k, accumulate: false);
        for (int i = 0; i < n; i++)
        {
            var row = new Span<float>(scratch + (long)i * k, k);
            TensorPrimitives.MultiplyAdd(row, s, new ReadOnlySpan<float>(w + (long)i * k, k), row);
            norm[i] = TensorPrimitives.Norm(row);
        }
    }

    /// <summary>Disposes the adapters and the trainable bias; the base layer belongs to the model.</summary>
    public void Dispose()
    {
        foreach (var ad in _adapters.Values) ad.Dispose();
        _adapters.Clear();
        _order.Clear();
        _bias?.Dispose();
    }
}
