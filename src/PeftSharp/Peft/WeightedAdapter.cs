using PeftSharp.Tensors;

namespace PeftSharp.Peft;

/// <summary>add_weighted_adapter ("linear", "cat", "svd"), with PEFT's exact math.</summary>
public sealed partial class PeftModel
{
    /// <summary>
    /// Adds <paramref name="name"/> combining <paramref name="adapters"/> as PEFT does; the new adapter
    /// has r = new rank and lora_alpha = r, and is frozen. Per module (sᵢ its scaling, wᵢ the weight):
    /// "linear" (same ranks) A = Σ √(wᵢsᵢ)·Aᵢ, B = Σ √(wᵢsᵢ)·Bᵢ; "cat" A = [wᵢsᵢ·Aᵢ] stacked, B = [Bᵢ]
    /// side by side (rank Σ rᵢ, delta exactly Σ wᵢsᵢBᵢAᵢ); "svd" the best rank-<paramref name="svdRank"/>
    /// (default max rᵢ) approximation B = U·S, A = Vᵀ of Σ wᵢsᵢ·ΔWᵢ, where ΔWᵢ = sᵢBᵢAᵢ is PEFT's
    /// get_delta_weight (so sᵢ enters twice there, exactly as in PEFT).
    /// </summary>
    public void AddWeightedAdapter(IReadOnlyList<string> adapters, IReadOnlyList<double> weights, string name, string combinationType = "svd", int? svdRank = null)
    {
        if (adapters.Count == 0 || adapters.Count != weights.Count) throw new PeftSharpException("add_weighted_adapter: give one weight per adapter (at least one adapter).");
        foreach (var a in adapters)
            if (!_configs.ContainsKey(a)) throw new PeftSharpException($"Adapter {a} does not exist");
        AdapterName.Validate(name);
        if (_configs.ContainsKey(name)) return; // PEFT returns silently when the name exists
        if (adapters.Any(a => _configs[a].UseDora)) throw new PeftSharpException("add_weighted_adapter: DoRA adapters cannot be combined (their magnitude vectors have no weighted form).");
        if (SavedModules.Count(w => adapters.Count(w.Copies.ContainsKey) > 1) > 0)
            throw new PeftSharpException("Cannot add weighted adapters if they target the same module with modules_to_save.");
        if (adapters.Count == 1) combinationType = "linear";
        var ranks = adapters.Select(a => _configs[a].R).ToList();
        int newRank = combinationType switch
        {
            "linear" when ranks.Distinct().Count() != 1 => throw new PeftSharpException("All adapters must have the same r value when using combination_type linear."),
            "linear" => ranks[0],
            "cat" => ranks.Sum(),
            "svd" => svdRank ?? ranks.Max(),
            _ => throw new PeftSharpException($"Invalid combination_type: {combinationType} (supported: linear, cat, svd)."),
        };
        var targets = adapters.Select(a => _configs[a].TargetModules).ToList();
        TargetModules union = targets.All(t => t?.Names != null)
            ? TargetModules.FromNames(targets.SelectMany(t => t!.Names!).Distinct())
            : targets.All(t => t?.Pattern != null)
                ? TargetModules.FromPattern(string.Join("|", targets.Select(t => $"({t!.Pattern})")))
                : throw new PeftSharpException("all adapter configs should follow the same target modules type. Combining adapters with `target_modules` type being a mix of list/set and string is not supported.");
        var config = LoraConfig.FromJson(_configs[adapters[0]].ToJson());
        config.R = newRank;
        config.LoraAlpha = newRank;
        config.TargetModules = union;
        Inject(name, config, new Rng(0), trainable: false, initialize: true);

        foreach (var layer in LoraLayers.Where(l => l.HasAdapter(name)))
        {
            var target = layer[name];
            var valid = adapters.Select((a, i) => (a, w: weights[i])).Where(p => layer.HasAdapter(p.a)).ToList();
            if (valid.Count == 0) throw new PeftSharpException($"add_weighted_adapter: no matching LoRA found in {layer.Info.Name}.");
            var ta = target.A.AsSpan();
            var tb = target.B.AsSpan();
            ta.Clear();
            tb.Clear();
            int n = layer.Info.OutFeatures, k = layer.Info.InFeatures, r = target.Rank;
            switch (combinationType)
            {
                case "linear":
                    foreach (var (a, w) in valid)
                    {
                        var src = layer[a];
                        float c = (float)Math.Sqrt(w * src.Scaling);
                        System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(src.A.AsSpan(), c, ta, ta);
                        System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(src.B.AsSpan(), c, tb, tb);
                    }
                    break;
                case "cat":
                    int offset = 0;
                    foreach (var (a, w) in valid)
                    {
                        var src = layer[a];
                        System.Numerics.Tensors.TensorPrimitives.Multiply(src.A.AsSpan(), (float)(w * src.Scaling), ta.Slice(offset * k, src.Rank * k));
                        var sb = src.B.AsSpan();
                        for (int i = 0; i < n; i++) sb.Slice(i * src.Rank, src.Rank).CopyTo(tb.Slice(i * r + offset, src.Rank));
                        offset += src.Rank;
                    }
                    break;
                default:
                    var delta = new double[(long)n * k];
                    foreach (var (a, w) in valid)
                    {
                        var src = layer[a];
                        float[] d = new float[delta.Length];
                        unsafe { fixed (float* pd = d) layer.DeltaWeight(a, pd); }
                        double f = w * src.Scaling;
                        for (int i = 0; i < d.Length; i++) delta[i] += f * d[i];
                    }
                    var (u, s, vt) = Svd.Decompose(delta, n, k);
                    int p = s.Length, keep = Math.Min(r, p);
                    for (int i = 0; i < n; i++)
                        for (int q = 0; q < keep; q++) tb[i * r + q] = (float)(u[i * p + q] * s[q]);
                    for (int q = 0; q < keep; q++)
                        for (int j = 0; j < k; j++) ta[q * k + j] = (float)vt[q * k + j];
                    break;
            }
        }
    }
}
