using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Tensors;

namespace PeftSharp.Models.Init;

/// <summary>What <see cref="ModelInitializer.Write"/> builds.</summary>
public sealed class InitModelOptions
{
    /// <summary>gpt2, llama, qwen2 or mistral; null takes the preset's own (real-shape presets only).</summary>
    public string? Architecture { get; set; }
    public string Preset { get; set; } = "tiny";
    public ulong Seed { get; set; }

    /// <summary>Everything but model.safetensors (for real-size shapes that only plan/inspect read).</summary>
    public bool ConfigOnly { get; set; }

    /// <summary>Texts to learn the tokenizer's merges from (default: a small built-in English corpus).</summary>
    public IReadOnlyList<string>? TokenizerCorpus { get; set; }

    /// <summary>How many BPE merges to learn from <see cref="TokenizerCorpus"/>.</summary>
    public int TokenizerMerges { get; set; } = TinyTokenizer.MergeCount;
}

/// <summary>The folder written: its config, skeleton and files.</summary>
public sealed record InitModelResult(string Folder, ModelConfig Config, ModelSkeleton Skeleton, IReadOnlyList<string> Files);

/// <summary>
/// Writes a complete Hugging Face model folder with random weights: config.json, model.safetensors
/// (float32, transformers' names and shapes, GPT-2 Conv1D weights stored [in, out]), tokenizer.json,
/// tokenizer_config.json (ChatML template) and generation_config.json. The same seed gives the same bytes.
/// </summary>
public static class ModelInitializer
{
    /// <summary>transformers' initializer_range default.</summary>
    public const float InitializerRange = 0.02f;

    public static InitModelResult Write(string folder, InitModelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        string arch = options.Architecture?.ToLowerInvariant() ?? ModelPresets.ArchitectureOf(options.Preset)
            ?? throw new PeftSharpException($"preset '{options.Preset}' needs an architecture: --arch {string.Join("|", ModelPresets.Architectures)}.");
        if (!ModelPresets.Architectures.Contains(arch))
            throw new PeftSharpException($"unknown architecture '{options.Architecture}'; expected one of {string.Join(", ", ModelPresets.Architectures)}.");
        var tokenizer = TinyTokenizer.For(arch, options.TokenizerCorpus == null ? null : BpeTrainer.TrainByteLevel(options.TokenizerCorpus, options.TokenizerMerges));
        var config = ModelPresets.CreateConfig(options.Preset, arch, tokenizer.VocabSize);
        config.BosTokenId = tokenizer.BosTokenId;
        config.EosTokenIds = [tokenizer.EosTokenId];
        config.PadTokenId = tokenizer.PadTokenId;
        config.TorchDtype = options.ConfigOnly ? ModelPresets.RealDtype(options.Preset) : "float32";
        var skeleton = ModelSkeleton.FromConfig(config);

        Directory.CreateDirectory(folder);
        var files = new List<string>();
        string configPath = Path.Combine(folder, ModelConfig.FileName);
        config.Write(configPath);
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
            string weights = Path.Combine(folder, SafetensorsCheckpoint.SingleFileName);
            SafetensorsWriter.Write(weights, RandomWeights(skeleton, options.Seed));
            files.Add(weights);
        }
        return new InitModelResult(Path.GetFullPath(folder), config, skeleton, files);
    }

    /// <summary>
    /// Float32 weights for every parameter of <paramref name="skeleton"/>, initialized as transformers'
    /// _init_weights does: normal(0, 0.02) for linear and embedding weights (GPT-2's c_proj weights:
    /// 0.02 / sqrt(2·n_layer)), zero biases, ones for norm weights, and a zero row for the Llama-family
    /// embedding's padding id. Drawn from one <see cref="Rng"/> stream in parameter order.
    /// </summary>
    public static IReadOnlyList<SafetensorsEntry> RandomWeights(ModelSkeleton skeleton, ulong seed)
    {
        var rng = new Rng(seed);
        var config = skeleton.Config;
        float projectionStd = InitializerRange / MathF.Sqrt(2f * config.LayerCount);
        var entries = new List<SafetensorsEntry>(skeleton.Parameters.Count);
        foreach (var p in skeleton.Parameters)
        {
            var values = new float[checked((int)p.Count)];
            bool bias = p.Name.EndsWith(".bias", StringComparison.Ordinal);
            if (p.Shape.Length == 1)
            {
                if (!bias) values.AsSpan().Fill(1f);
            }
            else
            {
                bool gpt2Projection = config is Gpt2Config && p.Name.EndsWith("c_proj.weight", StringComparison.Ordinal);
                rng.FillNormal(values, 0f, gpt2Projection ? projectionStd : InitializerRange);
                if (p.Name == "model.embed_tokens.weight" && config.PadTokenId is int pad && pad < config.VocabSize)
                    values.AsSpan(pad * config.HiddenSize, config.HiddenSize).Clear();
            }
            entries.Add(SafetensorsEntry.FromFloat32(p.Name, p.Shape, values));
        }
        return entries;
    }
}
