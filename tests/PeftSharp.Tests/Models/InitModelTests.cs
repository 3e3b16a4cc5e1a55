using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Init;

namespace PeftSharp.Tests.Models;

public sealed class InitModelTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "peftsharp-init-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private string Write(string arch, string preset = "tiny", ulong seed = 0, bool configOnly = false, string? name = null)
    {
        string folder = Path.Combine(_root, name ?? $"{arch}-{preset}-{seed}");
        ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, Preset = preset, Seed = seed, ConfigOnly = configOnly });
        return folder;
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("qwen2")]
    [InlineData("mistral")]
    public void WritesAFolderEveryLoaderReads(string arch)
    {
        string folder = Write(arch);
        var config = ModelConfig.Load(folder);
        Assert.Equal(arch, config.ModelType);
        Assert.Equal((64, 2, 4, 256), (config.HiddenSize, config.LayerCount, config.HeadCount, config.MaxPositionEmbeddings));
        if (config is LlamaConfig l) Assert.Equal((2, 16), (l.KeyValueHeadCount, l.HeadDim));

        var tokenizer = Tokenizer.FromFolder(folder);
        Assert.Equal(tokenizer.VocabSize, config.VocabSize);
        Assert.Equal(256 + TinyTokenizer.MergeCount + tokenizer.AddedTokens.Count, tokenizer.VocabSize);
        Assert.Equal(config.EosTokenIds.Single(), tokenizer.EosTokenId);
        Assert.Equal(config.PadTokenId, tokenizer.PadTokenId);
        Assert.Equal(config.BosTokenId, tokenizer.BosTokenId);
        Assert.True(tokenizer.IsSpecial(tokenizer.TokenToId("<|im_end|>")!.Value));

        var template = ChatTemplate.FromTokenizerConfig(folder);
        string chat = template.Render([ChatMessage.User("hello")], addGenerationPrompt: true);
        Assert.Equal("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", chat);
        var chatIds = tokenizer.Encode(chat, addSpecialTokens: false);
        Assert.Equal(tokenizer.TokenToId("<|im_start|>"), chatIds[0]);

        var generation = GenerationConfig.Load(folder);
        Assert.Contains(tokenizer.TokenToId("<|im_end|>")!.Value, generation.EosTokenIds);
        Assert.Contains(config.EosTokenIds[0], generation.EosTokenIds);

        var skeleton = ModelSkeleton.FromConfig(config);
        using var checkpoint = SafetensorsCheckpoint.Open(folder);
        Assert.Equal(skeleton.Parameters.Select(p => p.Name).Order(StringComparer.Ordinal), checkpoint.Names);
        foreach (var p in skeleton.Parameters)
        {
            var t = checkpoint[p.Name];
            Assert.Equal(PeftSharp.Tensors.DType.F32, t.DType);
            Assert.Equal(p.Shape, t.Shape);
        }
        Assert.Equal(arch is "llama" or "mistral", checkpoint.Contains("lm_head.weight"));
    }

    [Fact]
    public void StoresGpt2Conv1DWeightsInByOut()
    {
        using var checkpoint = SafetensorsCheckpoint.Open(Write("gpt2"));
        Assert.Equal([64L, 192L], checkpoint["transformer.h.0.attn.c_attn.weight"].Shape);
        Assert.Equal([256L, 64L], checkpoint["transformer.h.1.mlp.c_proj.weight"].Shape);
        Assert.False(checkpoint.Contains("lm_head.weight"));
    }

    [Fact]
    public void InitializesLikeTransformers()
    {
        string folder = Write("llama", seed: 3);
        var config = ModelConfig.Load(folder);
        using var checkpoint = SafetensorsCheckpoint.Open(folder);
        Assert.All(checkpoint["model.layers.0.input_layernorm.weight"].ToFloat32(), v => Assert.Equal(1f, v));
        var q = checkpoint["model.layers.1.self_attn.q_proj.weight"].ToFloat32();
        double mean = q.Average(v => (double)v), std = Math.Sqrt(q.Average(v => (v - mean) * (v - mean)));
        Assert.InRange(mean, -0.002, 0.002);
        Assert.InRange(std, 0.019, 0.021);
        var embed = checkpoint["model.embed_tokens.weight"].ToFloat32();
        Assert.All(embed.AsSpan(config.PadTokenId!.Value * 64, 64).ToArray(), v => Assert.Equal(0f, v));

        using var gpt2 = SafetensorsCheckpoint.Open(Write("gpt2", seed: 3));
        Assert.All(gpt2["transformer.h.0.ln_1.bias"].ToFloat32(), v => Assert.Equal(0f, v));
        Assert.All(gpt2["transformer.h.0.attn.c_attn.bias"].ToFloat32(), v => Assert.Equal(0f, v));
        var proj = gpt2["transformer.h.0.mlp.c_proj.weight"].ToFloat32();
        double projStd = Math.Sqrt(proj.Average(v => (double)v * v));
        Assert.InRange(projStd, 0.02 / Math.Sqrt(4) * 0.95, 0.02 / Math.Sqrt(4) * 1.05);
    }

    [Fact]
    public void SameSeedGivesIdenticalBytesAndAnotherSeedOtherWeights()
    {
        string a = Write("qwen2", seed: 9, name: "a"), b = Write("qwen2", seed: 9, name: "b"), c = Write("qwen2", seed: 10, name: "c");
        foreach (var file in Directory.GetFiles(a).Select(Path.GetFileName))
            Assert.Equal(File.ReadAllBytes(Path.Combine(a, file!)), File.ReadAllBytes(Path.Combine(b, file!)));
        Assert.Equal(5, Directory.GetFiles(a).Length);
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(a, "model.safetensors")), File.ReadAllBytes(Path.Combine(c, "model.safetensors")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "tokenizer.json")), File.ReadAllBytes(Path.Combine(c, "tokenizer.json")));
    }

    [Theory]
    [InlineData("gpt2", "Hello, world! It's 2024; the cat sat on the mat.")]
    [InlineData("llama", "  leading spaces,\ttabs\nand newlines\r\n")]
    [InlineData("qwen2", "Grüße aus Köln — naïve café, 日本語のテキスト, emoji 🙂🚀")]
    [InlineData("gpt2", "<|im_start|>user\nhi<|im_end|>\n")]
    public void TokenizerRoundTripsText(string arch, string text)
    {
        var tokenizer = Tokenizer.FromFolder(Write(arch));
        var ids = tokenizer.Encode(text, addSpecialTokens: false);
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.All(ids, id => Assert.InRange(id, 0, tokenizer.VocabSize - 1));
        if (text.StartsWith("Hello", StringComparison.Ordinal))
            Assert.True(ids.Length < text.Length * 2 / 3, $"{ids.Length} tokens for {text.Length} characters: the merges should compress English text.");
    }

    [Fact]
    public void LlamaTokenizerPrependsBos()
    {
        var tokenizer = Tokenizer.FromFolder(Write("llama"));
        var ids = tokenizer.Encode("the cat");
        Assert.Equal(tokenizer.BosTokenId, ids[0]);
        Assert.Equal("<s>the cat", tokenizer.Decode(ids));
        Assert.Equal("the cat", tokenizer.Decode(ids, skipSpecialTokens: true));
    }

    [Theory]
    [InlineData("distilgpt2", null, 81_912_576L)]
    [InlineData("gpt2", "gpt2", 124_439_808L)]
    [InlineData("qwen2.5-0.5b", null, 494_032_768L)]
    public void RealShapePresetsCountTheRealParameters(string preset, string? arch, long expected)
    {
        string folder = Path.Combine(_root, preset);
        var result = ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, Preset = preset, ConfigOnly = true });
        Assert.Equal(expected, result.Skeleton.ParameterCount);
        Assert.Equal(expected, ModelSkeleton.FromConfig(ModelConfig.Load(folder)).ParameterCount);
        Assert.False(File.Exists(Path.Combine(folder, "model.safetensors")));
        Assert.True(Tokenizer.FromFolder(folder).VocabSize < result.Config.VocabSize);
    }

    [Fact]
    public void RealShapesMatchThePublishedConfigs()
    {
        string golden = Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "configs");
        var real = (LlamaConfig)ModelConfig.Load(Path.Combine(golden, "qwen2.5-0.5b-instruct.json"));
        var ours = (LlamaConfig)ModelPresets.CreateConfig("qwen2.5-0.5b", null, 700);
        Assert.Equal(
            (real.VocabSize, real.HiddenSize, real.IntermediateSize, real.LayerCount, real.HeadCount, real.KeyValueHeadCount, real.HeadDim, real.MaxPositionEmbeddings, real.RopeTheta, real.TieWordEmbeddings, real.MaxWindowLayers, real.SlidingWindow),
            (ours.VocabSize, ours.HiddenSize, ours.IntermediateSize, ours.LayerCount, ours.HeadCount, ours.KeyValueHeadCount, ours.HeadDim, ours.MaxPositionEmbeddings, ours.RopeTheta, ours.TieWordEmbeddings, ours.MaxWindowLayers, ours.SlidingWindow));
        var stories = ModelSkeleton.FromConfig(ModelPresets.CreateConfig("stories15m", "llama", 700));
        Assert.Equal(32000L * 288 + 6 * (4L * 288 * 288 + 3L * 288 * 768 + 2 * 288) + 288, stories.ParameterCount);
    }

    [Fact]
    public void RejectsUnknownPresetsAndMismatchedArchitectures()
    {
        Assert.Throws<PeftSharpException>(() => Write("gpt2", "huge"));
        Assert.Throws<PeftSharpException>(() => Write("llama", "distilgpt2"));
        Assert.Throws<PeftSharpException>(() => ModelInitializer.Write(Path.Combine(_root, "x"), new InitModelOptions { Preset = "tiny" }));
        Assert.Throws<PeftSharpException>(() => Write("bert"));
    }
}
