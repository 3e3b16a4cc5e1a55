using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Peft;

/// <summary>
/// PEFT's ModulesToSaveWrapper for a linear module (lm_head, score): a trainable full copy per
/// adapter, used while that adapter is active; the original runs when adapters are disabled.
/// Copies are named `&lt;module&gt;.modules_to_save.&lt;adapter&gt;.weight` and saved as `&lt;module&gt;.weight`.
/// </summary>
public sealed unsafe class ModulesToSaveLinear(IBaseLinear baseLayer) : IWrappedLinear
{
    private readonly Dictionary<string, DenseLinear> _copies = new(StringComparer.Ordinal);

    public IBaseLinear BaseLayer { get; } = baseLayer;
    public LinearModuleInfo Info => BaseLayer.Info;
    public string? ActiveAdapter { get; set; }
    public bool AdaptersDisabled { get; set; }
    public IReadOnlyDictionary<string, DenseLinear> Copies => _copies;

    /// <summary>The active adapter's trained copy of the weight.</summary>
    public bool TryReadEffectiveWeight(Span<float> destination, Span<float> scratch)
    {
        if (AdaptersDisabled || ActiveAdapter == null) return false;
        _copies[ActiveAdapter].Weight.AsSpan().CopyTo(destination);
        return true;
    }

    public Parameter? EffectiveBias => !AdaptersDisabled && ActiveAdapter != null ? _copies[ActiveAdapter].Bias : BaseLayer.Bias;

    /// <summary>Adds a copy of the base weights for <paramref name="adapter"/>.</summary>
    public DenseLinear AddCopy(string adapter, bool trainable)
    {
        var info = Info;
        var w = Parameter.Create($"{info.Name}.modules_to_save.{adapter}.weight", [info.OutFeatures, info.InFeatures], trainable);
        BaseLayer.ReadWeight(w.Data);
        Parameter? b = null;
        if (BaseLayer.Bias is { } bias)
        {
            b = Parameter.Create($"{info.Name}.modules_to_save.{adapter}.bias", [info.OutFeatures], trainable);
            bias.AsSpan().CopyTo(b.AsSpan());
        }
        var copy = new DenseLinear(info, w, b);
        _copies.Add(adapter, copy);
        return copy;
    }

    public void DeleteCopy(string adapter)
    {
        if (_copies.Remove(adapter, out var c)) c.Dispose();
        if (ActiveAdapter == adapter) ActiveAdapter = null;
    }

    public Tensor Forward(Ops ops, Tensor x) =>
        !AdaptersDisabled && ActiveAdapter != null && _copies.TryGetValue(ActiveAdapter, out var copy)
            ? copy.Forward(ops, x) : BaseLayer.Forward(ops, x);

    public IEnumerable<Parameter> Parameters => BaseLayer.Parameters.Concat(_copies.Values.SelectMany(c => c.Parameters));

    public void Dispose()
    {
        foreach (var c in _copies.Values) c.Dispose();
        _copies.Clear();
    }
}
