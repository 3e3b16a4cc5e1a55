using System.Text.Json.Nodes;
using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Tests.Formats;

public sealed class ConfigTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-cfg-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Golden", "configs", name);

    /// <summary>Parameters of the model the config describes, counted from its shapes (independent of the library).</summary>
    private static long ParameterCount(ModelConfig config)
    {
        long h = config.HiddenSize, v = config.VocabSize;
        if (config is Gpt2Config g)
        {
            long perLayer = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * g.IntermediateSize + g.IntermediateSize) + (g.IntermediateSize * h + h);
            return v * h + (long)g.MaxPositionEmbeddings * h + g.LayerCount * perLayer + 2 * h;
        }
        var l = (LlamaConfig)config;
        long q = (long)l.HeadCount * l.HeadDim, kv = (long)l.KeyValueHeadCount * l.HeadDim;
        long layer = h * q + 2 * h * kv + q * h + 3 * h * l.IntermediateSize + 2 * h + (l.QkvBias ? q + 2 * kv : 0);
        return v * h * (l.TieWordEmbeddings ? 1 : 2) + l.LayerCount * layer + h;
    }

    [Theory]
    [InlineData("gpt2.json", 124_439_808L)]
    [InlineData("distilgpt2.json", 81_912_576L)]
    [InlineData("qwen2.5-0.5b-instruct.json", 494_032_768L)]
    [InlineData("deepseek-r1-distill-qwen-1.5b.json", 1_777_088_000L)]
    [InlineData("llama-2-7b.json", 6_738_415_616L)]
    [InlineData("llama-3.2-1b.json", 1_235_814_400L)]
    [InlineData("tinyllama-1.1b-chat-v1.0.json", 1_100_048_384L)]
    [InlineData("mistral-7b-v0.1.json", 7_241_732_096L)]
    public void PublishedConfigsGiveThePublishedParameterCounts(string file, long parameters)
    {
        var config = ModelConfig.Load(Fixture(file));
        Assert.Equal(parameters, ParameterCount(config));
        Assert.Equal(Path.GetFullPath(Fixture(file)), config.SourcePath);
    }

    [Fact]
    public void Gpt2Values()
    {
        var gpt2 = Assert.IsType<Gpt2Config>(ModelConfig.Load(Fixture("gpt2.json")));
        Assert.Equal((50257, 768, 12, 12, 1024), (gpt2.VocabSize, gpt2.HiddenSize, gpt2.LayerCount, gpt2.HeadCount, gpt2.MaxPositionEmbeddings));
        Assert.Null(gpt2.Inner);
        Assert.Equal(3072, gpt2.IntermediateSize);
        Assert.Equal(64, gpt2.HeadDim);
        Assert.Equal(1e-5, gpt2.LayerNormEpsilon);
        Assert.Equal("gelu_new", gpt2.ActivationFunction);
        Assert.True(gpt2.TieWordEmbeddings);
        Assert.Equal(50256, gpt2.BosTokenId);
        Assert.Equal([50256], gpt2.EosTokenIds);
        Assert.Equal(6, ModelConfig.Load(Fixture("distilgpt2.json")).LayerCount);
    }

    [Fact]
    public void QwenValues()
    {
        var qwen = Assert.IsType<LlamaConfig>(ModelConfig.Load(Fixture("qwen2.5-0.5b-instruct.json")));
        Assert.Equal("qwen2", qwen.ModelType);
        Assert.Equal((896, 4864, 24, 14, 2, 64), (qwen.HiddenSize, qwen.IntermediateSize, qwen.LayerCount, qwen.HeadCount, qwen.KeyValueHeadCount, qwen.HeadDim));
        Assert.Equal(1e6, qwen.RopeTheta);
        Assert.Equal(1e-6, qwen.RmsNormEps);
        Assert.True(qwen.QkvBias);
        Assert.False(qwen.OutputBias);
        Assert.True(qwen.TieWordEmbeddings);
        Assert.Equal(32768, qwen.SlidingWindow);
        Assert.Null(qwen.EffectiveSlidingWindow); // use_sliding_window false
        Assert.Equal([151645], qwen.EosTokenIds);
        Assert.Equal("bfloat16", qwen.TorchDtype);

        var r1 = (LlamaConfig)ModelConfig.Load(Fixture("deepseek-r1-distill-qwen-1.5b.json"));
        Assert.Equal((1536, 12, 2, 128, 10000.0, false), (r1.HiddenSize, r1.HeadCount, r1.KeyValueHeadCount, r1.HeadDim, r1.RopeTheta, r1.TieWordEmbeddings));
    }

    [Fact]
    public void LlamaAndMistralValuesAndDefaults()
    {
        var llama2 = (LlamaConfig)ModelConfig.Load(Fixture("llama-2-7b.json"));
        Assert.Equal(10000.0, llama2.RopeTheta); // absent: transformers' default
        Assert.Null(llama2.RopeScaling);
        Assert.Equal(128, llama2.HeadDim); // absent: hidden / heads
        Assert.False(llama2.QkvBias);
        Assert.Null(llama2.EffectiveSlidingWindow);

        var tiny = (LlamaConfig)ModelConfig.Load(Fixture("tinyllama-1.1b-chat-v1.0.json"));
        Assert.Equal((4, 64, 2048), (tiny.KeyValueHeadCount, tiny.HeadDim, tiny.MaxPositionEmbeddings));

        var mistral = (LlamaConfig)ModelConfig.Load(Fixture("mistral-7b-v0.1.json"));
        Assert.Equal("mistral", mistral.ModelType);
        Assert.Equal(4096, mistral.EffectiveSlidingWindow);
        Assert.False(mistral.QkvBias);
        Assert.Equal(8, mistral.KeyValueHeadCount);
    }

    [AssetFact]
    public void StoriesConfigFromTheSharedAssets()
    {
        var config = (LlamaConfig)ModelConfig.Load(TestAssets.Path("models", "stories260K-hf"));
        Assert.Equal((64, 172, 5, 8, 4, 8, 512, 512), (config.HiddenSize, config.IntermediateSize, config.LayerCount, config.HeadCount,
            config.KeyValueHeadCount, config.HeadDim, config.VocabSize, config.MaxPositionEmbeddings));
        Assert.True(config.TieWordEmbeddings);
        Assert.Equal(1e-5, config.RmsNormEps);
        Assert.Equal("float32", config.TorchDtype);
        Assert.Equal(1, config.BosTokenId);
        Assert.Equal([2], config.EosTokenIds);
    }

    [Fact]
    public void Llama3RopeScalingMatchesAnIndependentDoubleComputation()
    {
        var config = (LlamaConfig)ModelConfig.Load(Fixture("llama-3.2-1b.json"));
        var scaling = Assert.IsType<RopeScaling>(config.RopeScaling);
        Assert.Equal(("llama3", 32.0, 1.0, 4.0, 8192), (scaling.RopeType, scaling.Factor, scaling.LowFreqFactor!.Value, scaling.HighFreqFactor!.Value, scaling.OriginalMaxPositionEmbeddings!.Value));
        float[] inv = config.ComputeInverseFrequencies();
        Assert.Equal(32, inv.Length);
        int kept = 0, divided = 0, blended = 0;
        for (int i = 0; i < 32; i++)
        {
            // Llama 3 paper recipe, in double: wavelength λ = 2π/ω; λ < 8192/4 keeps ω, λ > 8192/1 uses ω/32,
            // in between blends with s = (8192/λ − 1)/(4 − 1): (1 − s)·ω/32 + s·ω.
            double omega = 1.0 / Math.Pow(500000.0, 2.0 * i / 64);
            double lambda = 2 * Math.PI / omega;
            double expected;
            if (lambda < 2048) { expected = omega; kept++; }
            else if (lambda > 8192) { expected = omega / 32; divided++; }
            else
            {
                double s = (8192 / lambda - 1) / 3;
                expected = (1 - s) * omega / 32 + s * omega;
                blended++;
            }
            Assert.True(Math.Abs(inv[i] - expected) <= 2e-6 * expected, $"inv_freq[{i}] = {inv[i]}, expected {expected}");
        }
        Assert.True(kept > 0 && divided > 0 && blended > 0, $"{kept} kept, {divided} divided, {blended} blended");
        Assert.Equal(1f, inv[0]);
    }

    [Fact]
    public void DefaultRopeIsThetaToTheMinusTwoIOverD()
    {
        var config = (LlamaConfig)ModelConfig.Load(Fixture("tinyllama-1.1b-chat-v1.0.json"));
        float[] inv = config.ComputeInverseFrequencies();
        for (int i = 0; i < inv.Length; i++)
            Assert.Equal(1.0 / Math.Pow(10000, 2.0 * i / 64), inv[i], 1e-6 * (1.0 / Math.Pow(10000, 2.0 * i / 64)));
    }

    [Theory]
    [InlineData("gpt2.json")]
    [InlineData("distilgpt2.json")]
    [InlineData("qwen2.5-0.5b-instruct.json")]
    [InlineData("llama-3.2-1b.json")]
    [InlineData("mistral-7b-v0.1.json")]
    public void WriteThenLoadKeepsEveryValueAndUnknownKeys(string file)
    {
        var config = ModelConfig.Load(Fixture(file));
        string path = Path.Combine(_dir, "config.json");
        config.Write(_dir);
        var again = ModelConfig.Load(path);
        Assert.Equal(ParameterCount(config), ParameterCount(again));
        Assert.Equal(config.EosTokenIds, again.EosTokenIds);
        Assert.Equal(config.GetType(), again.GetType());
        // Every original key survives with the same value (modelled keys may gain siblings such as head_dim).
        var original = JsonNode.Parse(File.ReadAllText(Fixture(file)))!.AsObject();
        var written = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        foreach (var (key, value) in original)
            Assert.True(JsonNode.DeepEquals(value, written[key]) || (value is JsonValue a && written[key] is JsonValue b && a.GetValue<double>() == b.GetValue<double>()),
                $"{key}: {value?.ToJsonString()} became {written[key]?.ToJsonString()}");
        string text = File.ReadAllText(path);
        Assert.EndsWith("}\n", text);
        Assert.Contains("\n  \"architectures\": [\n    \"", text);
    }

    [Fact]
    public void WritesKeysSortedWithPythonFloats()
    {
        var config = new LlamaConfig("llama") { HiddenSize = 64, HeadCount = 4, KeyValueHeadCount = 2, HeadDim = 16, LayerCount = 2, IntermediateSize = 128, VocabSize = 100, RmsNormEps = 1e-5, RopeTheta = 500000 };
        string path = Path.Combine(_dir, "config.json");
        config.Write(path);
        string text = File.ReadAllText(path);
        Assert.Contains("\"rms_norm_eps\": 1e-05,", text);
        Assert.Contains("\"rope_theta\": 500000.0,", text);
        Assert.Contains("\"rope_scaling\": null,", text);
        var keys = JsonNode.Parse(text)!.AsObject().Select(p => p.Key).ToList();
        Assert.Equal(keys.OrderBy(k => k, StringComparer.Ordinal), keys);
        var back = (LlamaConfig)ModelConfig.Load(path);
        Assert.Equal((64, 4, 2, 16, 2, 128, 100), (back.HiddenSize, back.HeadCount, back.KeyValueHeadCount, back.HeadDim, back.LayerCount, back.IntermediateSize, back.VocabSize));
    }

    [Theory]
    [InlineData(1e-5, "1e-05")]
    [InlineData(1e-6, "1e-06")]
    [InlineData(10000.0, "10000.0")]
    [InlineData(0.02, "0.02")]
    [InlineData(1.5e-7, "1.5e-07")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(123.456, "123.456")]
    public void FormatsFloatsAsPythonRepr(double value, string expected) => Assert.Equal(expected, PeftSharp.Formats.PythonJson.FormatFloat(value));

    [Fact]
    public void EosMayBeAList()
    {
        var config = ModelConfig.Parse("""{"model_type":"llama","eos_token_id":[128001,128008,128009],"hidden_size":64,"num_attention_heads":4}""");
        Assert.Equal([128001, 128008, 128009], config.EosTokenIds);
        Assert.Equal(4, ((LlamaConfig)config).KeyValueHeadCount);
    }

    [Fact]
    public void ReadsTransformers5RopeParameters()
    {
        var config = (LlamaConfig)ModelConfig.Parse("""
            {"model_type":"llama","hidden_size":64,"num_attention_heads":4,"dtype":"bfloat16",
             "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}
            """);
        Assert.Equal(500000.0, config.RopeTheta);
        Assert.Equal(8.0, config.RopeScaling!.Factor);
        Assert.Equal("bfloat16", config.TorchDtype);
    }

    [Fact]
    public void RefusesUnknownModelTypesAndBadValues()
    {
        var e = Assert.Throws<PeftSharpException>(() => ModelConfig.Parse("""{"model_type":"bert"}""", "x/config.json"));
        Assert.Contains("x/config.json", e.Message);
        Assert.Contains("'bert'", e.Message);
        Assert.Contains("gpt2, llama, mistral, qwen2", e.Message);
        Assert.Contains("model_type", Assert.Throws<PeftSharpException>(() => ModelConfig.Parse("{}")).Message);
        Assert.Contains("'hidden_size'", Assert.Throws<PeftSharpException>(() => ModelConfig.Parse("""{"model_type":"llama","hidden_size":"big"}""")).Message);
        Assert.Contains("num_key_value_heads", Assert.Throws<PeftSharpException>(() => ModelConfig.Parse("""{"model_type":"llama","num_attention_heads":32,"num_key_value_heads":5}""")).Message);
        Assert.Contains("not valid JSON", Assert.Throws<PeftSharpException>(() => ModelConfig.Parse("{")).Message);
        Assert.Contains("yarn", Assert.Throws<PeftSharpException>(() => ((LlamaConfig)ModelConfig.Parse("""{"model_type":"llama","rope_scaling":{"type":"yarn","factor":4.0}}""")).ComputeInverseFrequencies()).Message);
    }
}
