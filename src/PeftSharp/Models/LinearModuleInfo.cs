namespace PeftSharp.Models;

/// <summary>
/// A linear layer of a model, by its full module name as transformers names it
/// (`transformer.h.0.attn.c_attn`, `model.layers.0.self_attn.q_proj`). IsConv1D marks GPT-2's
/// Conv1D, whose weight is stored [in, out]; IsOutputLayer marks the head (lm_head, score),
/// which "all-linear" leaves out.
/// </summary>
public sealed record LinearModuleInfo(string Name, int InFeatures, int OutFeatures, bool HasBias, bool IsConv1D = false, bool IsOutputLayer = false)
{
    public long ParameterCount => (long)InFeatures * OutFeatures + (HasBias ? OutFeatures : 0);

    /// <summary>The last component of the name (`c_attn`, `q_proj`).</summary>
    public string ShortName => Name[(Name.LastIndexOf('.') + 1)..];
}
