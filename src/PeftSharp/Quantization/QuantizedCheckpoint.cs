using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Kernels;

namespace PeftSharp.Quantization;

/// <summary>
/// Hugging Face checkpoints quantized with bitsandbytes, as <c>model.save_pretrained</c> writes them after loading
/// with a 4-bit <c>BitsAndBytesConfig</c>: every quantized linear weight in bitsandbytes' serialization
/// (<see cref="BnbSerialization"/>), every other tensor as it was, and config.json with a <c>quantization_config</c>.
/// <para>
/// GPT-2's Conv1D weights are stored [in, out]. transformers replaces a Conv1D with a bnb <c>Linear4bit</c> too and
/// transposes the weight to nn.Linear's [out, in] before quantizing (<c>Bnb4BitHfQuantizer.create_quantized_param</c>:
/// "if issubclass(module.source_cls, Conv1D): new_value = new_value.T"); the saved quant_state shape is then
/// [out, in] and a pre-quantized weight is loaded without transposing. Both are done the same way here.
/// </para>
/// </summary>
public static unsafe class QuantizedCheckpoint
{
    private const string QuantStateMarker = ".quant_state.bitsandbytes__";

    /// <summary>
    /// Reads the model in <paramref name="modelDir"/> (config.json + safetensors), quantizes every linear weight that
    /// <paramref name="config"/> does not skip, and writes the quantized checkpoint (model.safetensors, sharded
    /// past 5 GB), config.json with <c>quantization_config</c>, and a copy of every other top-level file (tokenizer,
    /// generation config) to <paramref name="outDir"/>; a symbolic link out of the folder is not copied but reported
    /// through <paramref name="notice"/> (see <see cref="FolderCopy"/>). Returns the names of the weights quantized.
    /// </summary>
    public static IReadOnlyList<string> Write(string modelDir, string outDir, BitsAndBytesConfig config, Action<string>? notice = null)
    {
        if (!config.LoadIn4bit) throw new PeftSharpException("quantization_config: load_in_4bit must be true to write a 4-bit checkpoint.");
        config.Validate();
        var modelConfig = ModelConfig.Load(modelDir);
        if (modelConfig.Raw.ContainsKey("quantization_config"))
            throw new PeftSharpException($"{modelConfig.SourcePath}: the model is already quantized (config.json has a quantization_config).");
        var skeleton = ModelSkeleton.FromConfig(modelConfig);
        string fullOut = Path.GetFullPath(outDir), fullIn = Path.GetFullPath(modelDir);
        if (string.Equals(fullOut.TrimEnd(Path.DirectorySeparatorChar), fullIn.TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal))
            throw new PeftSharpException($"--out {outDir}: must differ from the model folder.");

        var quantized = new List<string>();
        using (var checkpoint = SafetensorsCheckpoint.Open(modelDir))
        {
            var linears = skeleton.Linears.Where(l => !config.Skips(l)).ToDictionary(l => l.Name + ".weight", StringComparer.Ordinal);
            var entries = new List<SafetensorsEntry>();
            foreach (var tensor in checkpoint.Tensors)
            {
                if (!linears.TryGetValue(tensor.Name, out var info))
                {
                    entries.Add(SafetensorsEntry.FromTensor(tensor));
                    continue;
                }
                var source = tensor;
                var module = info;
                entries.AddRange(QuantizedEntries(tensor.Name, config, () => QuantizeWeight(source, module, config)));
                quantized.Add(tensor.Name);
            }
            Directory.CreateDirectory(outDir);
            SafetensorsShardWriter.Write(outDir, entries);
        }

        var json = modelConfig.ToJson();
        json["quantization_config"] = config.ToJson();
        PythonJson.WriteFile(Path.Combine(outDir, ModelConfig.FileName), json);
        foreach (var file in Directory.EnumerateFiles(modelDir))
        {
            string name = Path.GetFileName(file);
            if (name == ModelConfig.FileName || name.EndsWith(".safetensors", StringComparison.Ordinal)
                || name.EndsWith(".safetensors.index.json", StringComparison.Ordinal)) continue;
            FolderCopy.CopyFile(modelDir, file, Path.Combine(outDir, name), notice);
        }
        return quantized;
    }

    /// <summary>
    /// The safetensors entries of one weight in bitsandbytes' serialization (the packed weight first), from a quantizer that
    /// gives the same result every call. The quantization state (absmax, quant_map, the JSON blob whose length depends on
    /// the values) is kept; the packed weight is quantized again when the writer reaches it, so one weight's packed bytes
    /// are held at a time (at the cost of quantizing twice). With <paramref name="spillDirectory"/>, the first quantization's
    /// packed bytes are written to a file there instead and copied into the checkpoint (then deleted) when the writer reaches
    /// them: disk for a second quantization, which for random weights means drawing them again (init-model at 65B).
    /// </summary>
    public static IEnumerable<SafetensorsEntry> QuantizedEntries(string weightName, BitsAndBytesConfig config, Func<Quantized4BitTensor> quantize,
        string? spillDirectory = null)
    {
        List<NamedTensorBytes> parts;
        string? spill = spillDirectory == null ? null : Path.Combine(spillDirectory, weightName + ".packed");
        using (var q = quantize())
        {
            parts = BnbSerialization.ToNamedTensors(q, weightName, config.QuantStorageDType).ToList();
            if (spill != null)
            {
                using var file = new FileStream(spill, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
                file.Write(q.Packed.Span);
            }
        }
        var packed = parts[0];
        yield return SafetensorsEntry.FromWriter(packed.Name, packed.DType, packed.Shape, stream =>
        {
            if (spill != null && File.Exists(spill))
            {
                using (var file = new FileStream(spill, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20)) file.CopyTo(stream, 1 << 20);
                File.Delete(spill);
                return;
            }
            using var q = quantize();
            stream.Write(q.Packed.Span);
        });
        foreach (var t in parts.Skip(1)) yield return SafetensorsEntry.FromBytes(t.Name, t.DType, t.Shape, t.Data);
    }

    /// <summary>Quantizes one checkpoint weight of <paramref name="info"/>, a Conv1D's [in, out] transposed to [out, in] first.</summary>
    public static Quantized4BitTensor QuantizeWeight(SafetensorsTensor tensor, LinearModuleInfo info, BitsAndBytesConfig config)
    {
        long[] expected = info.IsConv1D ? [info.InFeatures, info.OutFeatures] : [info.OutFeatures, info.InFeatures];
        if (!tensor.Shape.AsSpan().SequenceEqual(expected))
            throw new PeftSharpException($"{tensor.Name}: shape [{string.Join(", ", tensor.Shape)}], expected [{string.Join(", ", expected)}] for {info.Name}.");
        if (tensor.DType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new PeftSharpException($"{tensor.Name}: {tensor.DType.SafetensorsName()} weights cannot be quantized; expected F32, BF16 or F16.");
        return QuantizeStored(tensor.Pointer, tensor.DType, info, config);
    }

    /// <summary>Quantizes a weight of <paramref name="info"/> as the checkpoint stores it (a Conv1D's [in, out] is transposed to [out, in] first).</summary>
    public static Quantized4BitTensor QuantizeStored(byte* values, DType dtype, LinearModuleInfo info, BitsAndBytesConfig config)
    {
        long count = (long)info.OutFeatures * info.InFeatures;
        long[] shape = [info.OutFeatures, info.InFeatures];
        if (!info.IsConv1D)
            return Quantized4BitTensor.Quantize(values, dtype, count, shape, config.QuantType, config.Bnb4bitBlockSize, config.Bnb4bitUseDoubleQuant);
        int size = dtype.Size();
        using var transposed = new NativeBuffer<byte>(count * size, clear: false);
        Transpose(values, transposed.Pointer, info.InFeatures, info.OutFeatures, size);
        return Quantized4BitTensor.Quantize(transposed.Pointer, dtype, count, shape, config.QuantType, config.Bnb4bitBlockSize, config.Bnb4bitUseDoubleQuant);
    }

    /// <summary>The <c>quantization_config</c> of the model in <paramref name="modelDir"/>, or null when it is not quantized.</summary>
    public static BitsAndBytesConfig? ReadConfig(string modelDir)
    {
        var config = ModelConfig.Load(modelDir);
        if (!config.Raw.TryGetPropertyValue("quantization_config", out var node) || node is null) return null;
        if (node is not JsonObject obj)
            throw new PeftSharpException($"{config.SourcePath}: \"quantization_config\" must be an object.");
        return BitsAndBytesConfig.FromJson(obj);
    }

    /// <summary>Whether the checkpoint holds <paramref name="weightName"/> in bitsandbytes' 4-bit serialization.</summary>
    public static bool IsQuantized(SafetensorsCheckpoint checkpoint, string weightName) =>
        checkpoint.Contains(weightName + QuantStateMarker + "nf4") || checkpoint.Contains(weightName + QuantStateMarker + "fp4");

    /// <summary>
    /// Reads the 4-bit linear <paramref name="info"/> (weight in bitsandbytes' serialization, bias widened to f32)
    /// from a quantized checkpoint, multiplying in <paramref name="computeType"/>.
    /// </summary>
    /// <param name="lease">When given, the packed codes stay in the memory-mapped file (a view holding a lease on the checkpoint,
    /// paged in as the kernels read them and evictable under memory pressure) instead of being copied.</param>
    public static Linear4Bit ReadLinear(SafetensorsCheckpoint checkpoint, LinearModuleInfo info, DType computeType, CheckpointLease? lease = null)
    {
        string weightName = info.Name + ".weight";
        if (!IsQuantized(checkpoint, weightName))
            throw new PeftSharpException($"{checkpoint.Path}: {weightName} is not a bitsandbytes 4-bit weight (no {weightName}{QuantStateMarker}nf4 or fp4 entry).");
        var tensors = new Dictionary<string, NamedTensorBytes>(StringComparer.Ordinal);
        foreach (string suffix in new[] { "", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", QuantStateMarker + "nf4", QuantStateMarker + "fp4" })
            if (checkpoint.TryGetTensor(weightName + suffix, out var t))
                tensors[t.Name] = new NamedTensorBytes(t.Name, t.DType, t.Shape, suffix == "" && lease != null ? [] : t.Bytes.ToArray());
        var stored = checkpoint[weightName];
        Func<long, NativeBuffer<byte>>? view = lease == null ? null : expected => stored.ByteLength >= expected
            ? NativeBuffer<byte>.View(stored.Pointer, expected, lease.Acquire())
            : throw new PeftSharpException($"{weightName}: expected {expected} packed bytes, got {stored.ByteLength}.");
        var weight = BnbSerialization.FromNamedTensors(weightName, tensors, view, ownsData: true);
        Parameter? bias = null;
        try
        {
            if (info.HasBias)
            {
                var b = checkpoint[info.Name + ".bias"];
                if (b.ElementCount != info.OutFeatures)
                    throw new PeftSharpException($"{b.Name}: {b.ElementCount} values, expected {info.OutFeatures}.");
                bias = Parameter.Create(b.Name, [info.OutFeatures], requiresGrad: false);
                b.ReadFloat32(bias.Data);
            }
            return new Linear4Bit(info, weight, bias, computeType);
        }
        catch
        {
            weight.Dispose();
            bias?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Every 4-bit linear of the quantized model in <paramref name="modelDir"/>, by module name, with the compute
    /// dtype of its <c>quantization_config</c> (for a model loader: the remaining tensors load as usual).
    /// </summary>
    public static Dictionary<string, Linear4Bit> ReadLinears(string modelDir)
    {
        var config = ReadConfig(modelDir) ?? throw new PeftSharpException($"{modelDir}: config.json has no quantization_config; not a quantized model.");
        var skeleton = ModelSkeleton.FromConfig(ModelConfig.Load(modelDir));
        var result = new Dictionary<string, Linear4Bit>(StringComparer.Ordinal);
        // The packed codes stay in the mapped file: the checkpoint closes when the last layer reading it is disposed.
        using var lease = new CheckpointLease(SafetensorsCheckpoint.Open(modelDir));
        try
        {
            foreach (var info in skeleton.Linears)
                if (IsQuantized(lease.Checkpoint, info.Name + ".weight"))
                    result[info.Name] = ReadLinear(lease.Checkpoint, info, config.ComputeDType, lease);
        }
        catch
        {
            foreach (var layer in result.Values) layer.Dispose();
            throw;
        }
        return result;
    }

    private static void Transpose(byte* source, byte* destination, int rows, int columns, int elementSize)
    {
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < columns; j++)
                Buffer.MemoryCopy(source + (i * columns + j) * elementSize, destination + (j * rows + i) * elementSize, elementSize, elementSize);
    }
}

/// <summary>
/// Keeps a checkpoint open while views of its memory-mapped bytes are in use: the creator holds one reference, each
/// <see cref="Acquire"/> another; the checkpoint is disposed when the last is released.
/// </summary>
public sealed class CheckpointLease : IDisposable
{
    private int _references = 1;
    private bool _released;

    public CheckpointLease(SafetensorsCheckpoint checkpoint) => Checkpoint = checkpoint;

    public SafetensorsCheckpoint Checkpoint { get; }

    /// <summary>Whether the checkpoint is still open (some reference is held).</summary>
    public bool IsOpen => Volatile.Read(ref _references) > 0;

    /// <summary>One more reference, released by disposing the returned object (once).</summary>
    public IDisposable Acquire()
    {
        if (Interlocked.Increment(ref _references) <= 1)
        {
            Interlocked.Decrement(ref _references);
            throw new ObjectDisposedException(nameof(CheckpointLease), "the checkpoint was closed when its last view was released.");
        }
        return new Reference(this);
    }

    /// <summary>Releases the creator's reference.</summary>
    public void Dispose()
    {
        if (_released) return;
        _released = true;
        Release();
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0) Checkpoint.Dispose();
    }

    private sealed class Reference(CheckpointLease lease) : IDisposable
    {
        private int _done;
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0) lease.Release();
        }
    }
}
