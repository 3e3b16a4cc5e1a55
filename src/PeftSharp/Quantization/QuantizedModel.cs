using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Quantization;

/// <summary>
/// Loading a model in 4 bits, as transformers does with <c>BitsAndBytesConfig(load_in_4bit=True)</c> and PEFT's
/// <c>prepare_model_for_kbit_training</c> expects: every base linear slot except the skipped ones
/// (<see cref="BitsAndBytesConfig.Skips"/>: by default the output layer) becomes a frozen <see cref="Linear4Bit"/>;
/// embeddings, norms and the skipped layers stay f32. (PEFT's helper also casts non-quantized parameters to f32,
/// which ours already are, and freezes the base, which 4-bit layers always are.)
/// </summary>
public static unsafe class QuantizedModel
{
    /// <summary>
    /// Loads a model folder: a bitsandbytes 4-bit checkpoint (config.json with quantization_config, as
    /// transformers or `peftsharp quantize` write it) gets its <see cref="Linear4Bit"/> layers read as
    /// they are stored; any other folder loads as <see cref="CausalLM.Load"/> does.
    /// </summary>
    public static CausalLM Load(string folderOrHubId, LoadOptions? options = null)
    {
        string folder = Formats.ModelFolder.Resolve(folderOrHubId);
        var bnb = QuantizedCheckpoint.ReadConfig(folder);
        if (bnb == null) return CausalLM.Load(folder, options);
        var layers = QuantizedCheckpoint.ReadLinears(folder);
        try
        {
            options ??= new LoadOptions();
            var inner = options.LinearOverride;
            return CausalLM.Load(folder, options with
            {
                LinearOverride = info => layers.Remove(info.Name, out var layer) ? layer : inner?.Invoke(info),
            });
        }
        finally
        {
            foreach (var unused in layers.Values) unused.Dispose();
        }
    }

    /// <summary>
    /// Replaces the layer of every quantizable slot of <paramref name="model"/> with a <see cref="Linear4Bit"/>
    /// quantized from its current weight (read through <see cref="IBaseLinear.ReadWeight"/>), and disposes the
    /// replaced layer. Run it before wrapping layers with adapters; slots already 4-bit are left as they are.
    /// A quantized output layer must not share its weight with the embedding (tie_word_embeddings): that is refused.
    /// Returns the names of the modules quantized.
    /// </summary>
    public static IReadOnlyList<string> QuantizeLinears(ICausalLM model, BitsAndBytesConfig config)
    {
        if (!config.LoadIn4bit) throw new PeftSharpException("quantization_config: load_in_4bit must be true to quantize a model to 4 bits.");
        config.Validate();
        var quantized = new List<string>();
        foreach (var slot in model.Linears)
        {
            if (config.Skips(slot.Info) || slot.Layer is Linear4Bit) continue;
            if (slot.Layer is not IBaseLinear baseLayer)
                throw new PeftSharpException($"{slot.Name}: holds a {slot.Layer.GetType().Name}; quantize the model before adding adapters.");
            if (slot.Info.IsOutputLayer && model.Config.TieWordEmbeddings)
                throw new PeftSharpException($"{slot.Name}: the output layer shares its weight with the embedding (tie_word_embeddings); leave it in llm_int8_skip_modules.");
            var info = slot.Info;
            using var weight = new NativeBuffer<float>((long)info.OutFeatures * info.InFeatures, clear: false);
            baseLayer.ReadWeight(weight.Pointer);
            var layer = Linear4Bit.Quantize(info, weight.Pointer, DType.F32, baseLayer.Bias == null ? null : baseLayer.Bias.Data, config);
            slot.Layer = layer;
            if (baseLayer is HalfLinear half) half.Weight.ReleasePages();
            baseLayer.Dispose();
            quantized.Add(slot.Name);
        }
        return quantized;
    }
}
