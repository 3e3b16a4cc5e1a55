using System.Runtime.InteropServices;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Models.Init;

/// <summary>What <see cref="ModelInitializer.Write"/> builds.</summary>
public sealed class InitModelOptions
{
    /// <summary>gpt2, llama, qwen2 or mistral; null takes the preset's own (real-shape presets only).</summary>
    public string? Architecture { get; set; }
    public string Preset { get; set; } = "tiny";
    public ulong Seed { get; set; }

    /// <summary>
    /// Storage dtype of the weights, transformers' names: "float32" (default), "bfloat16" or "float16"
    /// (aliases f32/fp32, bf16, f16/fp16). The values are drawn in float32 and rounded to nearest even.
    /// </summary>
    public string Dtype { get; set; } = "float32";

    /// <summary>Everything but model.safetensors (for real-size shapes that only plan/inspect read).</summary>
    public bool ConfigOnly { get; set; }

    /// <summary>
    /// A config.json (or its folder) to take the shape from instead of <see cref="Preset"/>: any supported model type and size.
    /// Its special token ids are replaced by the small tokenizer's; its vocab_size must hold that tokenizer's ids.
    /// </summary>
    public string? ConfigPath { get; set; }

    /// <summary>
    /// Stores the linear weights it encodes in its own format, straight from the random weights one linear at a time: a
    /// pre-quantized 4-bit checkpoint (Quantization's <c>FourBitWeightEncoder</c>) without a 16-bit one on disk first.
    /// </summary>
    public ILinearWeightEncoder? LinearEncoder { get; set; }

    /// <summary>Texts to learn the tokenizer's merges from (default: a small built-in English corpus).</summary>
    public IReadOnlyList<string>? TokenizerCorpus { get; set; }

    /// <summary>How many BPE merges to learn from <see cref="TokenizerCorpus"/>.</summary>
    public int TokenizerMerges { get; set; } = TinyTokenizer.MergeCount;
}

/// <summary>Stores some linear weights of a random-weight checkpoint in a format of its own (init-model --quantize).</summary>
public interface ILinearWeightEncoder
{
    /// <summary>Whether this linear's weight is stored by the encoder.</summary>
    bool Encodes(LinearModuleInfo linear);

    /// <summary>Adds what the format needs to config.json (quantization_config).</summary>
    void DescribeIn(System.Text.Json.Nodes.JsonObject config);

    /// <summary>
    /// The checkpoint entries of one weight whose <paramref name="count"/> values, as the checkpoint would store them
    /// (<paramref name="dtype"/>; a Conv1D's [in, out]), <paramref name="fillValues"/> writes at the address it is given
    /// (count × dtype size bytes, on up to <see cref="Parallelism.MaxThreads"/> threads); it gives the same bytes every call.
    /// <paramref name="spillDirectory"/>, when given, is a folder where the encoder may keep an entry's bytes from the pass
    /// that sizes the header to the pass that writes the data (the caller removes it afterwards).
    /// </summary>
    IEnumerable<SafetensorsEntry> Entries(string weightName, LinearModuleInfo linear, DType dtype, long count, Action<nint> fillValues,
        string? spillDirectory);
}

/// <summary>The folder written: its config, skeleton and files.</summary>
public sealed record InitModelResult(string Folder, ModelConfig Config, ModelSkeleton Skeleton, IReadOnlyList<string> Files);

/// <summary>
/// Writes a complete Hugging Face model folder with random weights: config.json, model.safetensors
/// (float32, bfloat16 or float16; transformers' names and shapes, GPT-2 Conv1D weights stored [in, out]), tokenizer.json,
/// tokenizer_config.json (ChatML template) and generation_config.json. The same seed gives the same bytes.
/// </summary>
public static class ModelInitializer
{
    /// <summary>transformers' initializer_range default.</summary>
    public const float InitializerRange = 0.02f;

    public static InitModelResult Write(string folder, InitModelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var given = options.ConfigPath == null ? null : ModelConfig.Load(options.ConfigPath);
        if (given != null && given.Raw.ContainsKey("quantization_config"))
            throw new PeftSharpException($"{given.SourcePath}: the config has a quantization_config; give the unquantized model's config (and --quantize to write a 4-bit checkpoint).");
        string arch = given?.ModelType ?? options.Architecture?.ToLowerInvariant() ?? ModelPresets.ArchitectureOf(options.Preset)
            ?? throw new PeftSharpException($"preset '{options.Preset}' needs an architecture: --arch {string.Join("|", ModelPresets.Architectures)}.");
        if (!ModelPresets.Architectures.Contains(arch))
            throw new PeftSharpException(given != null
                ? $"{given.SourcePath}: model_type '{arch}' has no random-weight initializer; expected one of {string.Join(", ", ModelPresets.Architectures)}."
                : $"unknown architecture '{options.Architecture}'; expected one of {string.Join(", ", ModelPresets.Architectures)}.");
        var (torchDtype, dtype) = ParseDtype(options.Dtype);
        var tokenizer = TinyTokenizer.For(arch, options.TokenizerCorpus == null ? null : BpeTrainer.TrainByteLevel(options.TokenizerCorpus, options.TokenizerMerges));
        if (given != null && given.VocabSize < tokenizer.VocabSize)
            throw new PeftSharpException($"{given.SourcePath}: vocab_size {given.VocabSize} is smaller than the built-in tokenizer's {tokenizer.VocabSize} tokens.");
        var config = given ?? ModelPresets.CreateConfig(options.Preset, arch, tokenizer.VocabSize);
        var encoder = options.LinearEncoder;
        config.BosTokenId = tokenizer.BosTokenId;
        config.EosTokenIds = [tokenizer.EosTokenId];
        config.PadTokenId = tokenizer.PadTokenId;
        config.TorchDtype = options.ConfigOnly ? ModelPresets.RealDtype(options.Preset) : torchDtype;
        var skeleton = ModelSkeleton.FromConfig(config);

        Directory.CreateDirectory(folder);
        var files = new List<string>();
        string configPath = Path.Combine(folder, ModelConfig.FileName);
        var configJson = config.ToJson();
        encoder?.DescribeIn(configJson);
        PythonJson.WriteFile(configPath, configJson);
        files.Add(configPath);
        var generation = new GenerationConfig
        {
            BosTokenId = tokenizer.BosTokenId,
            EosTokenIds = tokenizer.GenerationEosTokenIds,
            PadTokenId = tokenizer.PadTokenId,
        };
        string generationPath = Path.Combine(folder, GenerationConfig.FileName);
        generation.Write(generationPath);
        files.Add(generationPath);
        tokenizer.Write(folder, config.MaxPositionEmbeddings);
        files.Add(Path.Combine(folder, "tokenizer.json"));
        files.Add(Path.Combine(folder, "tokenizer_config.json"));
        if (!options.ConfigOnly)
        {
            // Sharded past 5 GB as transformers shards (one model.safetensors below that). Encoded weights keep their bytes on
            // disk between the header pass and the data pass rather than drawing every value twice.
            string spill = Path.Combine(folder, ".init-model-spill.tmp");
            if (Directory.Exists(spill)) Directory.Delete(spill, recursive: true);
            if (encoder != null) Directory.CreateDirectory(spill);
            try
            {
                files.AddRange(SafetensorsShardWriter.Write(folder, RandomWeights(skeleton, options.Seed, dtype, encoder, encoder == null ? null : spill)));
            }
            finally
            {
                if (Directory.Exists(spill)) Directory.Delete(spill, recursive: true);
            }
        }
        return new InitModelResult(Path.GetFullPath(folder), config, skeleton, files);
    }

    /// <summary>The dtypes init-model writes, by transformers' name.</summary>
    public static IReadOnlyList<string> Dtypes { get; } = ["float32", "bfloat16", "float16"];

    /// <summary>transformers' name and safetensors dtype of <paramref name="dtype"/> (a name of <see cref="Dtypes"/> or an alias).</summary>
    public static (string TorchDtype, DType DType) ParseDtype(string dtype) => dtype.ToLowerInvariant() switch
    {
        "float32" or "f32" or "fp32" => ("float32", DType.F32),
        "bfloat16" or "bf16" => ("bfloat16", DType.BF16),
        "float16" or "f16" or "fp16" => ("float16", DType.F16),
        _ => throw new PeftSharpException($"--dtype '{dtype}' is not supported; expected {string.Join(", ", Dtypes)} (or bf16, fp16, f16, fp32, f32)."),
    };

    /// <summary>
    /// Weights for every parameter of <paramref name="skeleton"/>, initialized as transformers'
    /// _init_weights does: normal(0, 0.02) for linear and embedding weights (GPT-2's c_proj weights:
    /// 0.02 / sqrt(2·n_layer)), zero biases, ones for norm weights, and a zero row for the Llama-family
    /// embedding's padding id. Drawn in float32 from one <see cref="Rng"/> stream in parameter order;
    /// BF16/F16 round each value to nearest even. The entries are lazy
    /// (<see cref="SafetensorsEntry.FromWriter"/>): each draws its values a chunk at a time when it is
    /// written, from the generator state its parameter starts at, so no tensor is held in memory and the
    /// entries can be written in any order (the writer's is by dtype and name), any number of times.
    /// </summary>
    /// <param name="spillDirectory">Handed to <paramref name="encoder"/>: where it may keep encoded bytes until they are written.</param>
    public static IReadOnlyList<SafetensorsEntry> RandomWeights(ModelSkeleton skeleton, ulong seed, DType dtype = DType.F32, ILinearWeightEncoder? encoder = null,
        string? spillDirectory = null)
    {
        var encoded = encoder == null ? new Dictionary<string, LinearModuleInfo>()
            : skeleton.Linears.Where(encoder.Encodes).ToDictionary(l => l.Name + ".weight", StringComparer.Ordinal);
        if (dtype is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "expected F32, BF16 or F16.");
        var rng = new Rng(seed);
        var config = skeleton.Config;
        float projectionStd = InitializerRange / MathF.Sqrt(2f * config.LayerCount);
        var entries = new List<SafetensorsEntry>(skeleton.Parameters.Count);
        foreach (var p in skeleton.Parameters)
        {
            long count = p.Count;
            var init = p.Shape.Length > 1 ? Init.Normal : p.Name.EndsWith(".bias", StringComparison.Ordinal) ? Init.Zeros : Init.Ones;
            float std = config is Gpt2Config && p.Name.EndsWith("c_proj.weight", StringComparison.Ordinal) ? projectionStd : InitializerRange;
            long padStart = p.Name == "model.embed_tokens.weight" && config.PadTokenId is int id && id < config.VocabSize ? (long)id * config.HiddenSize : -1;
            var start = rng.State;
            if (init == Init.Normal) rng.Skip(NormalDraws(count));
            var tensor = new RandomTensor(init, std, count, start, padStart, config.HiddenSize, dtype);
            if (encoded.TryGetValue(p.Name, out var info)) entries.AddRange(encoder!.Entries(p.Name, info, dtype, count, tensor.FillAt, spillDirectory));
            else entries.Add(SafetensorsEntry.FromWriter(p.Name, dtype, p.Shape, tensor.Write));
        }
        return entries;
    }

    /// <summary>The generator outputs <see cref="Rng.FillNormal"/> takes for <paramref name="count"/> values: two per pair, two for an odd last one.</summary>
    private static long NormalDraws(long count) => 2 * ((count + 1) / 2);


    /// <summary>One parameter's values, drawn from <c>start</c> and written a chunk at a time.</summary>
    private sealed unsafe class RandomTensor(Init init, float std, long count, RngState start, long padStart, int padLength, DType dtype)
    {
        public void Write(Stream stream) => WriteRange(stream, new Rng(start), 0, count);

        /// <summary>
        /// Writes every value at <paramref name="destination"/>, <see cref="Write"/>'s bytes, in one contiguous range of whole
        /// chunks per thread: each range's generator is the start state advanced past the draws of the values before it (one
        /// draw per value, the ranges starting at even positions), so the values do not depend on the thread count.
        /// </summary>
        public void FillAt(nint destination)
        {
            long chunks = (count + NarrowChunk - 1) / NarrowChunk;
            int threads = (int)Math.Clamp(chunks, 1, Parallelism.MaxThreads);
            long perThread = (chunks + threads - 1) / threads * NarrowChunk;
            int size = dtype.Size();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                long from = t * perThread, to = Math.Min(count, from + perThread);
                if (from >= to) return;
                var rng = new Rng(start);
                if (init == Init.Normal) rng.Skip(from);
                using var stream = new UnmanagedMemoryStream((byte*)destination + from * size, (to - from) * size, (to - from) * size, FileAccess.Write);
                WriteRange(stream, rng, from, to);
            });
        }

        /// <summary>Values [<paramref name="from"/>, <paramref name="to"/>) from <paramref name="rng"/> (at <paramref name="from"/>'s draw), a chunk at a time.</summary>
        private void WriteRange(Stream stream, Rng rng, long from, long to)
        {
            var values = new float[(int)Math.Min(NarrowChunk, to - from)];
            var bytes = dtype == DType.F32 ? null : new byte[2 * values.Length];
            for (long done = from; done < to; done += NarrowChunk)
            {
                int n = (int)Math.Min(NarrowChunk, to - done);
                var chunk = values.AsSpan(0, n);
                Fill(chunk, init, std, rng);
                if (padStart >= 0)
                {
                    long padFrom = Math.Max(padStart, done), padTo = Math.Min(padStart + padLength, done + n);
                    if (padFrom < padTo) chunk.Slice((int)(padFrom - done), (int)(padTo - padFrom)).Clear();
                }
                if (bytes == null) stream.Write(MemoryMarshal.AsBytes(chunk));
                else
                {
                    Narrow(values, bytes.AsSpan(0, 2 * n), dtype);
                    stream.Write(bytes, 0, 2 * n);
                }
            }
        }
    }

    /// <summary>Floats drawn and narrowed at a time; even, so that chunked normal draws pair up as one whole draw does.</summary>
    private const int NarrowChunk = 1 << 16;

    private enum Init { Ones, Zeros, Normal }

    private static void Fill(Span<float> values, Init init, float std, Rng rng)
    {
        switch (init)
        {
            case Init.Ones: values.Fill(1f); break;
            case Init.Zeros: values.Clear(); break;
            default: rng.FillNormal(values, 0f, std); break;
        }
    }

    private static unsafe void Narrow(float[] source, Span<byte> destination, DType dtype)
    {
        fixed (float* s = source)
        fixed (byte* d = destination)
        {
            if (dtype == DType.BF16) Precision.F32ToBf16(s, (ushort*)d, destination.Length / 2);
            else Precision.F32ToF16(s, (Half*)d, destination.Length / 2);
        }
    }
}
