using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Models.Init;

/// <summary>
/// Model shapes init-model can build: "tiny" and "small" for any architecture, and the real shapes of
/// distilgpt2, gpt2, Qwen2.5-0.5B and llama2.c's stories15M (for plan/inspect, or as random-weight stand-ins).
/// </summary>
public static class ModelPresets
{
    public static IReadOnlyList<string> Names { get; } = ["tiny", "small", "distilgpt2", "gpt2", "qwen2.5-0.5b", "stories15m"];
    public static IReadOnlyList<string> Architectures { get; } = ["gpt2", "llama", "qwen2", "mistral"];

    /// <summary>The architecture a real-shape preset fixes, or null for tiny/small (any architecture).</summary>
    public static string? ArchitectureOf(string preset) => Normalize(preset) switch
    {
        "distilgpt2" or "gpt2" => "gpt2",
        "qwen2.5-0.5b" => "qwen2",
        "stories15m" => "llama",
        _ => null,
    };

    /// <summary>torch_dtype of the real checkpoint a preset mirrors (float32 for tiny/small).</summary>
    public static string RealDtype(string preset) => Normalize(preset) == "qwen2.5-0.5b" ? "bfloat16" : "float32";

    /// <summary>
    /// The config of <paramref name="preset"/> for <paramref name="architecture"/> (null: the preset's own).
    /// tiny/small take <paramref name="tokenizerVocabSize"/> as vocab_size; real shapes keep theirs.
    /// </summary>
    public static ModelConfig CreateConfig(string preset, string? architecture, int tokenizerVocabSize)
    {
        string name = Normalize(preset);
        if (!Names.Contains(name))
            throw new PeftSharpException($"unknown preset '{preset}'; expected one of {string.Join(", ", Names)}.");
        string? fixedArch = ArchitectureOf(name);
        string? arch = architecture?.ToLowerInvariant();
        if (arch != null && !Architectures.Contains(arch))
            throw new PeftSharpException($"unknown architecture '{architecture}'; expected one of {string.Join(", ", Architectures)}.");
        if (fixedArch != null && arch != null && arch != fixedArch)
            throw new PeftSharpException($"preset '{name}' is a {fixedArch} model; use --arch {fixedArch} or leave --arch out.");
        arch ??= fixedArch ?? throw new PeftSharpException($"preset '{name}' needs an architecture: --arch {string.Join("|", Architectures)}.");
        return name switch
        {
            "tiny" => Small(arch, hidden: 64, layers: 2, heads: 4, kvHeads: 2, positions: 256, tokenizerVocabSize),
            "small" => Small(arch, hidden: 256, layers: 4, heads: 8, kvHeads: 4, positions: 512, tokenizerVocabSize),
            "distilgpt2" => new Gpt2Config { LayerCount = 6 },
            "gpt2" => new Gpt2Config(),
            "qwen2.5-0.5b" => new LlamaConfig("qwen2")
            {
                VocabSize = 151936, HiddenSize = 896, IntermediateSize = 4864, LayerCount = 24, HeadCount = 14, KeyValueHeadCount = 2,
                HeadDim = 64, MaxPositionEmbeddings = 32768, MaxWindowLayers = 21, RopeTheta = 1000000.0, SlidingWindow = 32768,
                RmsNormEps = 1e-6, TieWordEmbeddings = true, BosTokenId = 151643, EosTokenIds = [151645],
            },
            _ => new LlamaConfig("llama")
            {
                VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, LayerCount = 6, HeadCount = 6, KeyValueHeadCount = 6,
                HeadDim = 48, MaxPositionEmbeddings = 256, RmsNormEps = 1e-5, TieWordEmbeddings = true,
            },
        };
    }

    private static ModelConfig Small(string arch, int hidden, int layers, int heads, int kvHeads, int positions, int vocab) => arch switch
    {
        "gpt2" => new Gpt2Config { VocabSize = vocab, HiddenSize = hidden, LayerCount = layers, HeadCount = heads, MaxPositionEmbeddings = positions },
        _ => new LlamaConfig(arch)
        {
            VocabSize = vocab, HiddenSize = hidden, IntermediateSize = 3 * hidden, LayerCount = layers, HeadCount = heads,
            KeyValueHeadCount = kvHeads, HeadDim = hidden / heads, MaxPositionEmbeddings = positions, RmsNormEps = 1e-6,
            TieWordEmbeddings = arch == "qwen2",
            SlidingWindow = arch == "llama" ? null : positions,
        },
    };

    private static string Normalize(string preset) => preset.ToLowerInvariant();
}
