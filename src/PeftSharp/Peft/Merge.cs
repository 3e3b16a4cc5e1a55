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

    /// <summary>Writes a model without adapters (e.g. after full fine-tuning) as a Hugging Face folder, as <see cref="SaveMerged"/> does.</summary>
    public static void SaveModel(ICausalLM model, string outputDirectory, DType dtype = DType.F32, string? sourceModelDirectory = null) =>
        new PeftModel(model).SaveMerged(outputDirectory, dtype, sourceModelDirectory);

    /// <summary>
    /// Writes the model with the active adapters merged as a Hugging Face folder: config.json
    /// (torch_dtype set to <paramref name="dtype"/>) and model.safetensors (sharded past 5 GB) in
    /// transformers' names and layouts (GPT-2's Conv1D weights [in, out]), plus the tokenizer and
    /// generation files of <paramref name="sourceModelDirectory"/> when given. The model itself is
    /// not changed, so this works on 4-bit bases too.
    /// </summary>
    public unsafe void SaveMerged(string outputDirectory, DType dtype = DType.F32, string? sourceModelDirectory = null)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16)) throw new PeftSharpException($"merge: dtype must be f32, bf16 or f16, got {dtype}.");
        var entries = new List<SafetensorsEntry>();
        var written = new HashSet<string>(StringComparer.Ordinal);
        var slotParams = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var s in Model.Linears) slotParams.UnionWith(s.Layer.Parameters);
        foreach (var p in Model.Parameters)
            if (!slotParams.Contains(p) && written.Add(p.Name))
                entries.Add(Entry(p.Name, p.Shape, p.AsSpan(), dtype));
        foreach (var s in Model.Linears)
        {
            var info = s.Info;
            float[] w;
            Parameter? bias = s.Base.Bias;
            switch (s.Layer)
            {
                case LoraLinear l when !l.AdaptersDisabled && !l.Merged:
                    w = l.MergedWeight(l.ActiveAdapters);
                    bias = l.TrainableBias ?? bias;
                    break;
                case LoraLinear l:
                    w = ReadWeight(l.BaseLayer);
                    bias = l.TrainableBias ?? bias;
                    break;
                case ModulesToSaveLinear m when !m.AdaptersDisabled && m.ActiveAdapter != null:
                    var copy = m.Copies[m.ActiveAdapter];
                    w = copy.Weight.AsSpan().ToArray();
                    bias = copy.Bias;
                    break;
                default:
                    w = ReadWeight(s.Base);
                    break;
            }
            foreach (float v in w)
                if (!float.IsFinite(v)) throw new PeftSharpException($"merge: the merged weight of {info.Name} has NaN or infinite values; the adapter seems to be broken.");
            string weightName = s.Base.Parameters.FirstOrDefault(p => !ReferenceEquals(p, s.Base.Bias))?.Name ?? info.Name + ".weight";
            if (written.Add(weightName))
            {
                int[] shape = info.IsConv1D ? [info.InFeatures, info.OutFeatures] : [info.OutFeatures, info.InFeatures];
                entries.Add(Entry(weightName, shape, info.IsConv1D ? Transpose(w, info.OutFeatures, info.InFeatures) : w, dtype));
            }
            if (bias != null && written.Add(info.Name + ".bias"))
                entries.Add(Entry(info.Name + ".bias", [info.OutFeatures], bias.AsSpan(), dtype));
        }
        Directory.CreateDirectory(outputDirectory);
        SafetensorsShardWriter.Write(outputDirectory, entries);
        var config = Model.Config.ToJson();
        config["torch_dtype"] = dtype switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" };
        PythonJson.WriteFile(Path.Combine(outputDirectory, Formats.HfConfig.ModelConfig.FileName), config);
        if (sourceModelDirectory != null)
            foreach (var f in new[] { "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model" })
            {
                var src = Path.Combine(sourceModelDirectory, f);
                if (File.Exists(src)) File.Copy(src, Path.Combine(outputDirectory, f), overwrite: true);
            }
    }

    private static unsafe float[] ReadWeight(IBaseLinear layer)
    {
        var w = new float[(long)layer.Info.OutFeatures * layer.Info.InFeatures];
        fixed (float* p = w) layer.ReadWeight(p);
        return w;
    }

    private static float[] Transpose(float[] w, int rows, int cols)
    {
        var t = new float[w.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[(long)j * rows + i] = w[(long)i * cols + j];
        return t;
    }

    private static unsafe SafetensorsEntry Entry(string name, int[] shape, ReadOnlySpan<float> values, DType dtype)
    {
        long[] dims = shape.Select(d => (long)d).ToArray();
        if (dtype == DType.F32) return SafetensorsEntry.FromFloat32(name, dims, values.ToArray());
        var bytes = new byte[values.Length * 2];
        fixed (float* src = values)
        fixed (byte* dst = bytes)
        {
            if (dtype == DType.BF16) Precision.F32ToBf16(src, (ushort*)dst, values.Length);
            else Precision.F32ToF16(src, (Half*)dst, values.Length);
        }
        return SafetensorsEntry.FromBytes(name, dtype, dims, bytes);
    }
}
