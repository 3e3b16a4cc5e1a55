using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Quantization;

/// <summary>
/// init-model --config CONFIG --quantize: a pre-quantized bitsandbytes checkpoint written straight from the random weights is
/// byte for byte the checkpoint init-model writes dense and `peftsharp quantize` then quantizes, and it loads as 4-bit.
/// </summary>
public sealed class InitQuantizedTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-init-q-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    // Odd sizes: 40 × 72 and 72 × 40 weights end in partial 64-blocks; qwen2 has q/k/v biases; lm_head untied. GPT-2: Conv1D.
    [Theory]
    [InlineData("""{"model_type": "qwen2", "hidden_size": 40, "intermediate_size": 72, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 700, "max_position_embeddings": 32, "tie_word_embeddings": false}""", "nf4", true, "bfloat16")]
    [InlineData("""{"model_type": "gpt2", "n_embd": 24, "n_head": 2, "n_layer": 1, "vocab_size": 700, "n_positions": 16, "n_inner": null}""", "fp4", false, "float32")]
    public void QuantizingWhileWritingEqualsWritingThenQuantizing(string configJson, string quantType, bool doubleQuant, string dtype)
    {
        string config = Path.Combine(_root, "config.json");
        File.WriteAllText(config, configJson);
        var bnb = PeftSharp.Cli.Commands.InitModelCommand.QuantizationFor(quantType, doubleQuant, dtype);
        string direct = Path.Combine(_root, "direct"), dense = Path.Combine(_root, "dense"), twoStep = Path.Combine(_root, "two-step");
        ModelInitializer.Write(direct, new InitModelOptions { ConfigPath = config, Dtype = dtype, Seed = 3, LinearEncoder = new FourBitWeightEncoder(bnb) });
        ModelInitializer.Write(dense, new InitModelOptions { ConfigPath = config, Dtype = dtype, Seed = 3 });
        var quantized = QuantizedCheckpoint.Write(dense, twoStep, bnb);
        Assert.NotEmpty(quantized);

        Assert.Equal(File.ReadAllBytes(Path.Combine(twoStep, "model.safetensors")), File.ReadAllBytes(Path.Combine(direct, "model.safetensors")));
        Assert.Equal(File.ReadAllText(Path.Combine(twoStep, "config.json")), File.ReadAllText(Path.Combine(direct, "config.json")));

        using var model = QuantizedModel.Load(direct);
        Assert.Equal(quantized.Count, model.Linears.Count(s => s.Base is Linear4Bit));
        using var tape = new Tape { GradEnabled = false };
        var logits = model.Forward(new Ops(tape), new TokenBatch(1, 5, [1, 2, 3, 4, 5]));
        Assert.All(logits.AsSpan().ToArray(), v => Assert.True(float.IsFinite(v)));
    }

    // Weights of 256 × 1300 = 5.1 chunks of 65,536 values: each thread draws its own range of whole chunks from the skipped-to
    // generator state, and the bytes are the single-threaded writer's (the dense checkpoint is written as one stream); the
    // packed codes are kept in a spill file between the header pass and the data pass, not drawn twice.
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void WeightsDrawnOnSeveralThreadsAreTheSingleStreamsBytes(int threads)
    {
        string config = Path.Combine(_root, "config.json");
        File.WriteAllText(config, """{"model_type": "llama", "hidden_size": 256, "intermediate_size": 1300, "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": 700, "max_position_embeddings": 32, "tie_word_embeddings": false}""");
        var bnb = PeftSharp.Cli.Commands.InitModelCommand.QuantizationFor("nf4", true, "bfloat16");
        string direct = Path.Combine(_root, "direct"), dense = Path.Combine(_root, "dense"), twoStep = Path.Combine(_root, "two-step");
        int saved = PeftSharp.Kernels.Parallelism.MaxThreads;
        PeftSharp.Kernels.Parallelism.MaxThreads = threads;
        try
        {
            ModelInitializer.Write(direct, new InitModelOptions { ConfigPath = config, Dtype = "bfloat16", Seed = 5, LinearEncoder = new FourBitWeightEncoder(bnb) });
        }
        finally
        {
            PeftSharp.Kernels.Parallelism.MaxThreads = saved;
        }
        ModelInitializer.Write(dense, new InitModelOptions { ConfigPath = config, Dtype = "bfloat16", Seed = 5 });
        QuantizedCheckpoint.Write(dense, twoStep, bnb);
        Assert.Equal(File.ReadAllBytes(Path.Combine(twoStep, "model.safetensors")), File.ReadAllBytes(Path.Combine(direct, "model.safetensors")));
        // The packed codes went through the spill folder (drawn once) and it is gone.
        Assert.Equal(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
            Directory.EnumerateFileSystemEntries(direct).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    // --random-codes: the codes and scales are drawn directly; the checkpoint loads as 4-bit, its weights have the size of
    // N(0, 0.02) ones (every |w| ≤ its block's absmax, absmax in 0.02 × [2.2, 3.2]), and the seed alone decides the bytes.
    [Fact]
    public void RandomCodesGiveALoadableCheckpointOfNormalSizedWeights()
    {
        string config = Path.Combine(_root, "config.json");
        File.WriteAllText(config, """{"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 700, "max_position_embeddings": 32, "tie_word_embeddings": false}""");
        var bnb = PeftSharp.Cli.Commands.InitModelCommand.QuantizationFor("nf4", true, "bfloat16");
        string Write(string name, ulong seed)
        {
            string folder = Path.Combine(_root, name);
            ModelInitializer.Write(folder, new InitModelOptions { ConfigPath = config, Dtype = "bfloat16", Seed = seed, LinearEncoder = new FourBitWeightEncoder(bnb, seed) });
            return folder;
        }
        string a = Write("a", 1), again = Write("again", 1), other = Write("other", 2);
        byte[] Bytes(string folder) => File.ReadAllBytes(Path.Combine(folder, "model.safetensors"));
        Assert.Equal(Bytes(a), Bytes(again));
        Assert.NotEqual(Bytes(a), Bytes(other));

        using var model = QuantizedModel.Load(a);
        var layer = Assert.IsType<Linear4Bit>(model.Linears.Single(s => s.Name == "model.layers.1.mlp.down_proj").Base);
        var values = new float[layer.Weight.ElementCount];
        layer.Weight.Dequantize(values);
        float max = values.Max(MathF.Abs);
        Assert.InRange(max, 0.02f * 2.2f * 0.99f, 0.02f * 3.2f * 1.01f);
        Assert.InRange(Math.Sqrt(values.Average(v => (double)v * v)), 0.01, 0.04);
        using var tape = new Tape { GradEnabled = false };
        var logits = model.Forward(new Ops(tape), new TokenBatch(1, 5, [1, 2, 3, 4, 5]));
        Assert.All(logits.AsSpan().ToArray(), v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void AConfigWithAQuantizationConfigOrTooFewTokensIsRefusedByName()
    {
        string config = Path.Combine(_root, "q.json");
        File.WriteAllText(config, """{"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 700, "quantization_config": {"load_in_4bit": true}}""");
        var e = Assert.Throws<PeftSharpException>(() => ModelInitializer.Write(Path.Combine(_root, "x"), new InitModelOptions { ConfigPath = config }));
        Assert.Contains("quantization_config", e.Message);
        File.WriteAllText(config, """{"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 20}""");
        e = Assert.Throws<PeftSharpException>(() => ModelInitializer.Write(Path.Combine(_root, "y"), new InitModelOptions { ConfigPath = config }));
        Assert.Contains("vocab_size 20", e.Message);
    }
}
