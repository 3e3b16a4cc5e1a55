using System.Runtime.InteropServices;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Export;

/// <summary>What <see cref="GgufExporter"/> writes.</summary>
public sealed record GgufExportOptions
{
    /// <summary>The storage type of the matrices: f32, f16 (default), bf16, q8_0, q4_0 or q4_k. Norms, biases and other vectors stay f32.</summary>
    public GgmlType Type { get; init; } = GgmlType.F16;

    /// <summary>general.name (default: the model folder's name).</summary>
    public string? Name { get; init; }

    /// <summary>The folder holding tokenizer.json and tokenizer_config.json (default: the model's folder).</summary>
    public string? TokenizerDirectory { get; init; }
}

/// <summary>The file written and what the user should know about it.</summary>
public sealed record GgufExportResult(string Path, int TensorCount, IReadOnlyList<string> Notices);

/// <summary>
/// Writes models and LoRA adapters as llama.cpp GGUF files (what llama.cpp, Ollama, LM Studio and LLamaSharp load).
/// A model is written with its active adapters merged (a 4-bit base is dequantized a matrix at a time and written in
/// the requested type: no float32 copy of the model is made, in memory or on disk), under llama.cpp's tensor names and
/// metadata keys, with its tokenizer. An adapter alone is written in llama.cpp's LoRA format (general.type = adapter),
/// to be applied on the base model's GGUF with <c>--lora</c> or Ollama's ADAPTER. Files are written a tensor at a time
/// through a temp file and a rename.
/// </summary>
public static class GgufExporter
{
    public static IReadOnlyList<string> TypeNames { get; } = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"];

    public static GgmlType ParseType(string text) => text.ToLowerInvariant() switch
    {
        "f32" or "float32" => GgmlType.F32,
        "f16" or "float16" => GgmlType.F16,
        "bf16" or "bfloat16" => GgmlType.BF16,
        "q8_0" => GgmlType.Q8_0,
        "q4_0" => GgmlType.Q4_0,
        "q4_k" or "q4_k_s" => GgmlType.Q4_K,
        _ => throw new PeftSharpException($"--type '{text}' is not supported; expected one of {string.Join(", ", TypeNames)}."),
    };

    /// <summary>llama.cpp's general.file_type (llama_ftype) for a file whose matrices are <paramref name="type"/>.</summary>
    public static uint FileType(GgmlType type) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q4_0 => 2,
        GgmlType.Q8_0 => 7,
        GgmlType.BF16 => 32,
        GgmlType.Q4_K => 14, // LLAMA_FTYPE_MOSTLY_Q4_K_S: every matrix Q4_K
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>Writes <paramref name="model"/> (with whatever adapters are active on it, merged) as a GGUF model file.</summary>
    public static GgufExportResult ExportModel(ICausalLM model, string path, GgufExportOptions? options = null)
    {
        options ??= new GgufExportOptions();
        CheckType(options.Type);
        var notices = new List<string>();
        var arch = GgufArchitecture.For(model.Config);
        var writer = new GgufWriter();
        string? folder = model.Config.SourcePath is { } src ? Path.GetDirectoryName(Path.GetFullPath(src)) : null;
        AddGeneral(writer, arch, "model", options, folder);
        arch.AddHyperparameters(writer);
        string? tokenizerFolder = options.TokenizerDirectory ?? folder;
        var vocabulary = tokenizerFolder == null ? null : GgufVocabulary.FromFolder(tokenizerFolder, model.Config);
        if (vocabulary == null)
        {
            vocabulary = GgufVocabulary.Placeholder(model.Config);
            notices.Add($"no tokenizer.json in {tokenizerFolder ?? "the model folder"}: wrote a stand-in vocabulary of {model.Config.VocabSize} placeholder tokens "
                + "(llama.cpp needs one); the model runs from token ids, not text.");
        }
        vocabulary.AddTo(writer);

        var entries = ModelWriter.Entries(model, DType.F32, conv1DAsStored: false);
        var fallbacks = new List<string>();
        SafetensorsEntry? embedding = null;
        bool hasOutput = false;
        foreach (var entry in entries)
        {
            string name = arch.TensorName(entry.Name)
                ?? throw new PeftSharpException($"GGUF export: tensor '{entry.Name}' has no llama.cpp counterpart in the {arch.Name} architecture.");
            if (name == "token_embd.weight") embedding = entry;
            if (name == "output.weight") hasOutput = true;
            AddTensor(writer, name, entry, arch.PermuteHeads(entry.Name), options.Type, fallbacks);
        }
        // llama.cpp's llama and qwen2 read a missing output.weight as the tied embedding; its GPT-2 converter writes the copy.
        if (!hasOutput && arch.Name == "gpt2" && embedding != null)
            AddTensor(writer, "output.weight", embedding, 0, options.Type, fallbacks);
        foreach (var (name, values) in arch.ExtraTensors())
            writer.AddTensor(name, [values.Length], GgmlType.F32, s => s.Write(MemoryMarshal.AsBytes(values.AsSpan())));
        if (fallbacks.Count > 0)
            notices.Add($"{fallbacks.Count} matrices have rows that are not whole {GgmlTypes.Name(options.Type)} blocks ({(options.Type == GgmlType.Q4_K ? 256 : 32)} values) "
                + $"and were written as {(options.Type == GgmlType.Q4_K ? "q8_0 (or f16)" : "f16")}: {string.Join(", ", fallbacks.Take(6))}{(fallbacks.Count > 6 ? ", ..." : "")}.");
        if (model.Linears.Any(s => s.Base is Quantization.Linear4Bit))
            notices.Add($"the base model is 4-bit (NF4/FP4, which GGUF has no type for): each matrix was dequantized, merged and written as {GgmlTypes.Name(options.Type)}.");
        writer.Write(path);
        return new GgufExportResult(Path.GetFullPath(path), writer.TensorCount, notices);
    }

    /// <summary>
    /// Writes the active LoRA adapter of <paramref name="peft"/> alone as a llama.cpp LoRA GGUF: for each adapted module,
    /// "{llama.cpp weight name}.lora_a" (A, ggml [in, r]) and ".lora_b" (B, ggml [r, out]), with adapter.lora.alpha.
    /// llama.cpp scales each module by alpha / r; a module whose PEFT scaling differs (rsLoRA, rank_pattern,
    /// alpha_pattern) gets the ratio folded into its B.
    /// </summary>
    public static GgufExportResult ExportAdapter(PeftModel peft, string path, GgufExportOptions? options = null)
    {
        options ??= new GgufExportOptions();
        var type = options.Type;
        if (type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16))
            throw new PeftSharpException($"--lora-only writes adapters as f32, f16 or bf16 (llama.cpp applies them to any base); got {GgmlTypes.Name(type)}.");
        if (peft.ActiveAdapters.Count != 1)
            throw new PeftSharpException($"--lora-only writes one adapter; {peft.ActiveAdapters.Count} are active ({string.Join(", ", peft.ActiveAdapters)}). Export them one at a time, or merge them into the model.");
        string adapter = peft.ActiveAdapters[0];
        var config = peft.Configs[adapter];
        if (peft.SavedModules.Any())
            throw new PeftSharpException($"--lora-only: adapter \"{adapter}\" has modules_to_save ({string.Join(", ", peft.SavedModules.Select(m => m.Info.Name).Take(3))}), which llama.cpp's LoRA format cannot hold; export the merged model instead.");
        var arch = GgufArchitecture.For(peft.Model.Config);
        var writer = new GgufWriter();
        string? folder = peft.Model.Config.SourcePath is { } src ? Path.GetDirectoryName(Path.GetFullPath(src)) : null;
        AddGeneral(writer, arch, "adapter", options, folder);
        writer.Add("adapter.type", "lora");
        float alpha = (float)config.LoraAlpha;
        writer.Add("adapter.lora.alpha", alpha);
        int modules = 0;
        foreach (var layer in peft.LoraLayers)
        {
            if (!layer.HasAdapter(adapter)) continue;
            if (layer.TrainableBias != null)
                throw new PeftSharpException($"--lora-only: {layer.Info.Name} has a trained bias (bias = \"{config.Bias}\"), which llama.cpp's LoRA format cannot hold; export the merged model instead.");
            var a = layer[adapter];
            if (a.UseDora) throw new PeftSharpException($"--lora-only: adapter \"{adapter}\" is DoRA, which llama.cpp does not apply; export the merged model instead.");
            var info = layer.Info;
            string baseName = arch.TensorName(info.Name + ".weight")
                ?? throw new PeftSharpException($"GGUF export: module '{info.Name}' has no llama.cpp counterpart in the {arch.Name} architecture.");
            int rank = a.Rank, heads = arch.PermuteHeads(info.Name + ".weight");
            float factor = (float)(a.Scaling * rank / alpha);
            var aParam = a.A;
            var bParam = a.B;
            writer.AddTensor(baseName + ".lora_a", [info.InFeatures, rank], type, s => WriteValues(s, aParam.AsSpan(), type));
            writer.AddTensor(baseName + ".lora_b", [rank, info.OutFeatures], type, s =>
            {
                var b = bParam.AsSpan().ToArray();
                if (MathF.Abs(factor - 1f) > 1e-6f) System.Numerics.Tensors.TensorPrimitives.Multiply(b, factor, b);
                if (heads > 0) GgufArchitecture.PermuteRows(b, info.OutFeatures, rank, heads);
                WriteValues(s, b, type);
            });
            modules++;
        }
        if (modules == 0) throw new PeftSharpException($"--lora-only: adapter \"{adapter}\" adapts no module.");
        writer.Write(path);
        return new GgufExportResult(Path.GetFullPath(path), writer.TensorCount, []);
    }

    private static void CheckType(GgmlType type)
    {
        if (type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_K))
            throw new PeftSharpException($"GGUF export writes f32, f16, bf16, q8_0, q4_0 or q4_k; got {GgmlTypes.Name(type)}.");
    }

    private static void AddGeneral(GgufWriter writer, GgufArchitecture arch, string fileKind, GgufExportOptions options, string? folder)
    {
        writer.Add("general.architecture", arch.Name);
        writer.Add("general.type", fileKind);
        writer.Add("general.name", options.Name ?? (folder != null ? Path.GetFileName(folder) : arch.Name));
        writer.Add("general.file_type", FileType(options.Type));
        if (options.Type is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_K) writer.Add("general.quantization_version", 2u);
    }

    private static void AddTensor(GgufWriter writer, string name, SafetensorsEntry entry, int permuteHeads, GgmlType requested, List<string> fallbacks)
    {
        long[] dims = entry.Shape.Reverse().ToArray();
        GgmlType type = dims.Length == 1 ? GgmlType.F32 : requested;
        // A row must be whole blocks: Q4_K falls back to Q8_0 (32-value blocks), then anything to f16.
        if (type == GgmlType.Q4_K && dims[0] % GgmlQuants.QKK != 0)
        {
            type = GgmlType.Q8_0;
            fallbacks.Add(name);
        }
        if (type is GgmlType.Q8_0 or GgmlType.Q4_0 && dims[0] % GgmlQuants.QK != 0)
        {
            type = GgmlType.F16;
            if (!fallbacks.Contains(name)) fallbacks.Add(name);
        }
        writer.AddTensor(name, dims, type, stream =>
        {
            var values = ReadValues(entry);
            if (permuteHeads > 0) GgufArchitecture.PermuteRows(values, (int)entry.Shape[0], (int)entry.Shape[1], permuteHeads);
            WriteValues(stream, values, type);
        });
    }

    /// <summary>The float32 values of one merged tensor, computed now.</summary>
    private static unsafe float[] ReadValues(SafetensorsEntry entry)
    {
        var values = new float[entry.ByteLength / 4];
        fixed (float* p = values)
        {
            using var stream = new UnmanagedMemoryStream((byte*)p, 0, entry.ByteLength, FileAccess.Write);
            entry.WriteTo(stream);
        }
        return values;
    }

    /// <summary>Converts <paramref name="values"/> to <paramref name="type"/> a band of rows at a time and writes them.</summary>
    private static void WriteValues(Stream stream, ReadOnlySpan<float> values, GgmlType type)
    {
        if (type == GgmlType.F32) { stream.Write(MemoryMarshal.AsBytes(values)); return; }
        const int Chunk = 1 << 16; // a multiple of the 32- and 256-value blocks (rows are whole blocks, so chunks may span rows)
        var bytes = new byte[GgmlTypes.ByteSize(type, Math.Min(Chunk, values.Length), 1)];
        for (int done = 0; done < values.Length; done += Chunk)
        {
            var chunk = values.Slice(done, Math.Min(Chunk, values.Length - done));
            int n = (int)GgmlTypes.ByteSize(type, chunk.Length, 1);
            GgmlQuants.Quantize(chunk, type, bytes.AsSpan(0, n));
            stream.Write(bytes, 0, n);
        }
    }
}
