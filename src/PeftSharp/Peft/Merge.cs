using PeftSharp.Autograd;
using PeftSharp.Formats;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Peft;

/// <summary>Merging: in-place merge/unmerge, merge_and_unload, and writing a merged Hugging Face model folder.</summary>
public sealed partial class PeftModel
{
    /// <summary>merge_adapter: folds the active adapters into the base weights in place (base layers that allow it).</summary>
    public void MergeAdapter(params string[] adapters)
    {
        foreach (var l in LoraLayers) l.Merge(adapters.Length == 0 ? null : adapters.Where(l.HasAdapter));
    }

    /// <summary>unmerge_adapter: restores the base weights (within float rounding).</summary>
    public void UnmergeAdapter()
    {
        foreach (var l in LoraLayers) l.Unmerge();
    }

    /// <summary>
    /// merge_and_unload: merges the active adapters into the base weights in place, writes trained
    /// biases into the base, replaces modules_to_save with the active copy, and removes every
    /// wrapper; returns the plain model. Needs base layers whose weight can change (not 4-bit: use
    /// <see cref="SaveMerged"/> there).
    /// </summary>
    public ICausalLM MergeAndUnload()
    {
        if (!_disabled) MergeAdapter();
        foreach (var s in Model.Linears)
            switch (s.Layer)
            {
                case LoraLinear l:
                    l.CommitBias();
                    s.Layer = l.BaseLayer;
                    l.Dispose();
                    break;
                case ModulesToSaveLinear w:
                    if (!_disabled && w.ActiveAdapter != null && w.Copies.TryGetValue(w.ActiveAdapter, out var copy))
                        ReplaceWeights(copy, w.BaseLayer);
                    s.Layer = w.BaseLayer;
                    w.Dispose();
                    break;
            }
        _configs.Clear();
        _active = [];
        return Model;
    }

    private static unsafe void ReplaceWeights(DenseLinear copy, IBaseLinear original)
    {
        var diff = ReadWeight(original);
        System.Numerics.Tensors.TensorPrimitives.Subtract(copy.Weight.AsSpan(), diff, diff);
        fixed (float* pd = diff) original.AddToWeight(pd, 1f);
        if (copy.Bias != null && original.Bias != null) copy.Bias.AsSpan().CopyTo(original.Bias.AsSpan());
    }

    /// <summary>Writes a model without adapters (e.g. after full fine-tuning) as a Hugging Face folder (<see cref="ModelWriter.Save"/>).</summary>
    public static IReadOnlyList<string> SaveModel(ICausalLM model, string outputDirectory, DType dtype = DType.F32, string? sourceModelDirectory = null) =>
        ModelWriter.Save(model, outputDirectory, dtype, sourceModelDirectory);

    /// <summary>
    /// merge_and_unload written to disk: the model with its active adapters merged as a Hugging Face folder
    /// (<see cref="ModelWriter.Save"/>: each weight merged when the writer reaches it; the model itself is not changed).
    /// </summary>
    public IReadOnlyList<string> SaveMerged(string outputDirectory, DType dtype = DType.F32, string? sourceModelDirectory = null) =>
        ModelWriter.Save(Model, outputDirectory, dtype, sourceModelDirectory);

    private static unsafe float[] ReadWeight(IBaseLinear layer)
    {
        var w = new float[(long)layer.Info.OutFeatures * layer.Info.InFeatures];
        fixed (float* p = w) layer.ReadWeight(p);
        return w;
    }
}
