using PeftSharp.Autograd;
using PeftSharp.Formats;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// Writes a whole model as a Hugging Face folder: config.json and model.safetensors (sharded past 5 GB) under
/// transformers' names and layouts. Each linear slot is written as the weight its layer computes with: a wrapped
/// layer's effective weight (<see cref="IWrappedLinear.TryReadEffectiveWeight"/>: LoRA's active adapters folded in, a
/// modules_to_save copy), else the base weight, widened from 16 bits or dequantized from 4. PEFT's merge_and_unload,
/// full fine-tuning's save and GGUF export all write through <see cref="Entries"/>.
/// </summary>
public static class ModelWriter
{
    /// <summary>
    /// Writes the model with the active adapters merged as a Hugging Face folder: config.json
    /// (torch_dtype set to <paramref name="dtype"/>) and model.safetensors (sharded past 5 GB) in
    /// transformers' names and layouts (GPT-2's Conv1D weights [in, out]), plus the tokenizer and
    /// generation files of <paramref name="sourceModelDirectory"/> when given. The model itself is
    /// not changed, so this works on 4-bit bases too. Each weight is merged, checked, transposed and
    /// converted when the writer reaches it (<see cref="SafetensorsEntry.FromWriter"/>), so one tensor at
    /// a time is held beside the model. When a merged weight is not finite, the
    /// <see cref="PeftSharpException"/> leaves no weights file or config.json behind (config.json is
    /// written after the weights). A 4-bit base is dequantized, never re-quantized: config.json loses its
    /// quantization_config and the returned notices say so.
    /// </summary>
    public static IReadOnlyList<string> Save(ICausalLM model, string outputDirectory, DType dtype = DType.F32, string? sourceModelDirectory = null)
    {
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16)) throw new PeftSharpException($"merge: dtype must be f32, bf16 or f16, got {dtype}.");
        var entries = Entries(model, dtype, conv1DAsStored: true);
        bool created = !Directory.Exists(outputDirectory);
        Directory.CreateDirectory(outputDirectory);
        try
        {
            SafetensorsShardWriter.Write(outputDirectory, entries);
        }
        catch
        {
            if (created && !Directory.EnumerateFileSystemEntries(outputDirectory).Any()) Directory.Delete(outputDirectory);
            throw;
        }
        var notices = new List<string>();
        var config = model.SavedConfig();
        config["torch_dtype"] = dtype switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" };
        // The weights written are dense: a quantized base's config must not claim otherwise.
        if (config.Remove("quantization_config") || model.Linears.Any(s => s.Base.IsQuantized))
            notices.Add($"the base model is 4-bit: its weights were dequantized, merged and written as a dense {config["torch_dtype"]} model "
                + "without quantization_config (not re-quantized; `peftsharp quantize` makes a 4-bit checkpoint of it).");
        PythonJson.WriteFile(Path.Combine(outputDirectory, Formats.HfConfig.ModelConfig.FileName), config);
        if (sourceModelDirectory != null)
            foreach (var f in new[] { "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model" })
            {
                var src = Path.Combine(sourceModelDirectory, f);
                if (File.Exists(src) || new FileInfo(src).LinkTarget != null)
                    Formats.FolderCopy.CopyFile(sourceModelDirectory, src, Path.Combine(outputDirectory, f), notices.Add);
            }
        return notices;
    }

    /// <summary>
    /// The merged model's tensors under transformers' names, each computed when its entry is written (one at a time).
    /// GPT-2's Conv1D weights are [in, out] as transformers stores them when <paramref name="conv1DAsStored"/>, else [out, in].
    /// </summary>
    public static List<SafetensorsEntry> Entries(ICausalLM model, DType dtype, bool conv1DAsStored)
    {
        var entries = new List<SafetensorsEntry>();
        var written = new HashSet<string>(StringComparer.Ordinal);
        var scratch = new MergeScratch();
        var slotParams = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var s in model.Linears) slotParams.UnionWith(s.Layer.Parameters);
        foreach (var p in model.Parameters)
            if (!slotParams.Contains(p) && written.Add(p.Name))
                entries.Add(Entry(p.Name, p.Shape, dtype, scratch, _ => p.AsSpan()));
        foreach (var h in model.HalfWeights)
            if (written.Add(h.Name))
                entries.Add(Entry(h.Name, [h.Rows, h.Columns], dtype, scratch, sc => Widened(h, sc)));
        foreach (var s in model.Linears)
        {
            var info = s.Info;
            Parameter? bias = s.Layer is IWrappedLinear wrapped ? wrapped.EffectiveBias : s.Base.Bias;
            // A tied output layer carries the embedding's name (f32 parameter or 16-bit view), already written above.
            string weightName = s.Base is HalfLinear half ? half.Weight.Name
                : s.Base.Parameters.FirstOrDefault(p => !ReferenceEquals(p, s.Base.Bias))?.Name ?? info.Name + ".weight";
            if (written.Add(weightName))
            {
                int[] shape = info.IsConv1D && conv1DAsStored ? [info.InFeatures, info.OutFeatures] : [info.OutFeatures, info.InFeatures];
                var slot = s;
                entries.Add(Entry(weightName, shape, dtype, scratch, sc => SlotWeight(slot, sc, conv1DAsStored)));
            }
            if (bias != null && written.Add(info.Name + ".bias"))
                entries.Add(Entry(info.Name + ".bias", [info.OutFeatures], dtype, scratch, _ => bias.AsSpan()));
        }
        return entries;
    }

    /// <summary>A 16-bit weight widened to f32 (its file pages released once read).</summary>
    private static unsafe ReadOnlySpan<float> Widened(HalfMatrix h, MergeScratch scratch)
    {
        int count = checked(h.Rows * h.Columns);
        var buffer = scratch.Weight(count);
        fixed (float* p = buffer) h.WidenRows(0, h.Rows, p);
        h.ReleasePages();
        return buffer.AsSpan(0, count);
    }

    /// <summary>The weight of <paramref name="s"/> as transformers stores it (its layer's effective weight, Conv1D transposed to [in, out]), checked finite.</summary>
    private static unsafe ReadOnlySpan<float> SlotWeight(LinearSlot s, MergeScratch scratch, bool transposeConv1D)
    {
        var info = s.Info;
        int count = checked(info.OutFeatures * info.InFeatures);
        var buffer = scratch.Weight(count).AsSpan(0, count);
        if (!(s.Layer is IWrappedLinear wrapped && wrapped.TryReadEffectiveWeight(buffer, scratch.Transposed(count))))
            fixed (float* p = buffer) s.Base.ReadWeight(p);
        ReadOnlySpan<float> w = buffer;
        // The base weight has been read: a view of the checkpoint gives its pages back (re-read if used again).
        if (s.Base is HalfLinear view) view.Weight.ReleasePages();
        foreach (float v in w)
            if (!float.IsFinite(v)) throw new PeftSharpException($"merge: the merged weight of {info.Name} has NaN or infinite values; the adapter seems to be broken.");
        if (!info.IsConv1D || !transposeConv1D) return w;
        var t = scratch.Transposed(count);
        int rows = info.OutFeatures, cols = info.InFeatures;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[(long)j * rows + i] = w[i * cols + j];
        return t.AsSpan(0, count);
    }

    /// <summary>
    /// Buffers reused from tensor to tensor while a merged model is written (one tensor is written at a time), so
    /// that writing allocates about two of the largest weight instead of garbage for every layer. "Transposed" also
    /// holds ΔW while a LoRA weight is merged (before the transpose needs it).
    /// </summary>
    private sealed class MergeScratch
    {
        private float[] _weight = [], _transposed = [];

        /// <summary>Narrowed bytes of one chunk of floats.</summary>
        public byte[] Narrow { get; } = new byte[2 * ChunkFloats];

        public float[] Weight(int count) => _weight.Length >= count ? _weight : _weight = new float[count];
        public float[] Transposed(int count) => _transposed.Length >= count ? _transposed : _transposed = new float[count];
    }

    /// <summary>Floats converted and written at a time.</summary>
    private const int ChunkFloats = 1 << 16;

    private delegate ReadOnlySpan<float> FloatSource(MergeScratch scratch);

    /// <summary>A tensor stored as <paramref name="dtype"/> whose float32 values <paramref name="values"/> gives when the writer reaches it.</summary>
    private static SafetensorsEntry Entry(string name, int[] shape, DType dtype, MergeScratch scratch, FloatSource values) =>
        SafetensorsEntry.FromWriter(name, dtype, shape.Select(d => (long)d).ToArray(), stream => WriteAs(stream, values(scratch), dtype, scratch.Narrow));

    /// <summary>Writes <paramref name="values"/> as <paramref name="dtype"/> (bf16/f16 rounded to nearest even), a chunk at a time.</summary>
    private static unsafe void WriteAs(Stream stream, ReadOnlySpan<float> values, DType dtype, byte[] narrow)
    {
        for (int done = 0; done < values.Length; done += ChunkFloats)
        {
            var chunk = values.Slice(done, Math.Min(ChunkFloats, values.Length - done));
            if (dtype == DType.F32) { stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(chunk)); continue; }
            fixed (float* src = chunk)
            fixed (byte* dst = narrow)
            {
                if (dtype == DType.BF16) Precision.F32ToBf16(src, (ushort*)dst, chunk.Length);
                else Precision.F32ToF16(src, (Half*)dst, chunk.Length);
            }
            stream.Write(narrow, 0, 2 * chunk.Length);
        }
    }
}
