using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using PeftSharp.Kernels;

namespace PeftSharp.Tests.Quantization;

public sealed unsafe class QuantizedCheckpointTests : IDisposable
{
    // Odd sizes: 40×20 k/v weights end in a partial 64-block; qwen2 has q/k/v biases; lm_head is not tied.
    private const string TinyQwen2 = """
        {"model_type": "qwen2", "hidden_size": 40, "intermediate_size": 72, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "vocab_size": 50, "max_position_embeddings": 32, "tie_word_embeddings": false, "torch_dtype": "bfloat16"}
        """;

    private const string TinyGpt2 = """
        {"model_type": "gpt2", "n_embd": 24, "n_head": 2, "n_layer": 1, "vocab_size": 30, "n_positions": 16, "n_inner": null}
        """;

    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-qckpt-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A model folder: config.json, random weights for every skeleton parameter (linear weights in <paramref name="weightType"/>), a tokenizer file.</summary>
    private string MakeModel(string name, string configJson, DType weightType)
    {
        string dir = Path.Combine(_root, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{}");
        var skeleton = ModelSkeleton.FromConfig(ModelConfig.Parse(configJson));
        var linearWeights = skeleton.Linears.Select(l => l.Name + ".weight").ToHashSet();
        var entries = new List<SafetensorsEntry>();
        int seed = 0;
        foreach (var p in skeleton.Parameters)
        {
            var values = Gaussian.Sample((int)p.Count, ++seed, 0.05f);
            if (weightType == DType.BF16 && linearWeights.Contains(p.Name))
            {
                var bytes = new byte[values.Length * 2];
                for (int i = 0; i < values.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), PeftSharp.Kernels.Precision.F32ToBf16(values[i]));
                entries.Add(SafetensorsEntry.FromBytes(p.Name, DType.BF16, p.Shape, bytes));
            }
            else entries.Add(SafetensorsEntry.FromFloat32(p.Name, p.Shape, values));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), entries);
        return dir;
    }

    [Theory]
    [InlineData("nf4", true, 64, DType.F32)]
    [InlineData("fp4", false, 32, DType.BF16)]
    public void WritesBitsandbytesTensorsAndConfigAndReadsTheSameLayersBack(string quantType, bool doubleQuant, int blockSize, DType weightType)
    {
        string model = MakeModel("qwen2-" + quantType, TinyQwen2, weightType);
        string output = Path.Combine(_root, "out-" + quantType);
        var config = new BitsAndBytesConfig
        {
            LoadIn4bit = true, Bnb4bitQuantType = quantType, Bnb4bitUseDoubleQuant = doubleQuant, Bnb4bitBlockSize = blockSize,
            Bnb4bitComputeDtype = "bfloat16",
        };
        var quantized = QuantizedCheckpoint.Write(model, output, config);

        var skeleton = ModelSkeleton.FromConfig(ModelConfig.Load(model));
        Assert.Equal(2 * 7, quantized.Count);
        Assert.DoesNotContain("lm_head.weight", quantized);

        // config.json: the source config plus quantization_config exactly as BitsAndBytesConfig.ToJson writes it.
        var written = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
        Assert.True(JsonNode.DeepEquals(config.ToJson(), written["quantization_config"]));
        Assert.Equal("bfloat16", written["torch_dtype"]!.GetValue<string>());
        Assert.True(File.Exists(Path.Combine(output, "tokenizer.json")));
        var roundTrip = QuantizedCheckpoint.ReadConfig(output)!;
        Assert.Equal((quantType, doubleQuant, "bfloat16"), (roundTrip.Bnb4bitQuantType, roundTrip.Bnb4bitUseDoubleQuant, roundTrip.Bnb4bitComputeDtype));

        using var source = SafetensorsCheckpoint.Open(model);
        using var result = SafetensorsCheckpoint.Open(output);
        // Non-quantized tensors (embeddings, norms, biases, lm_head) are byte-identical.
        foreach (var t in source.Tensors.Where(t => !quantized.Contains(t.Name)))
        {
            Assert.Equal(t.DType, result[t.Name].DType);
            Assert.True(t.Bytes.SequenceEqual(result[t.Name].Bytes), t.Name);
        }
        var q = result["model.layers.1.self_attn.k_proj.weight"];
        Assert.Equal(DType.U8, q.DType);
        Assert.Equal([400L, 1L], q.Shape);
        Assert.Equal(doubleQuant ? DType.U8 : DType.F32, result["model.layers.1.self_attn.k_proj.weight.absmax"].DType);
        Assert.Equal(doubleQuant, result.Contains("model.layers.1.self_attn.k_proj.weight.nested_absmax"));
        Assert.True(result.Contains("model.layers.1.self_attn.k_proj.weight.quant_state.bitsandbytes__" + quantType));

        // Read back: identical packed bytes and state as quantizing the source weight directly; biases f32.
        var layers = QuantizedCheckpoint.ReadLinears(output);
        try
        {
            Assert.Equal(14, layers.Count);
            foreach (var info in skeleton.Linears.Where(l => !l.IsOutputLayer))
            {
                var layer = layers[info.Name];
                using var direct = QuantizedCheckpoint.QuantizeWeight(source[info.Name + ".weight"], info, config);
                AssertSameTensor(direct, layer.Weight, info.Name);
                Assert.True(layer.Weight.Packed.IsView, $"{info.Name}: the packed codes stay in the mapped file");
                Assert.Equal(weightType, layer.Weight.State.DType);
                Assert.Equal(DType.BF16, layer.ComputeType);
                if (info.HasBias) Assert.Equal(source[info.Name + ".bias"].ToFloat32(), layer.Bias!.AsSpan().ToArray());
                else Assert.Null(layer.Bias);
            }
        }
        finally
        {
            foreach (var l in layers.Values) l.Dispose();
        }
    }

    [Fact]
    public void ACheckpointLeaseClosesTheCheckpointWhenItsLastViewIsReleased()
    {
        string model = MakeModel("lease", TinyGpt2, DType.F32);
        var lease = new CheckpointLease(SafetensorsCheckpoint.Open(model));
        var first = lease.Acquire();
        var second = lease.Acquire();
        lease.Dispose();
        lease.Dispose();
        Assert.True(lease.IsOpen);
        first.Dispose();
        first.Dispose();   // a reference is released once
        Assert.True(lease.IsOpen);
        second.Dispose();
        Assert.False(lease.IsOpen);
        Assert.Throws<ObjectDisposedException>(() => lease.Acquire());
        Assert.False(lease.IsOpen);
    }

    [Fact]
    public void Gpt2Conv1DWeightsAreTransposedToLinearLayoutBeforeQuantizing()
    {
        string model = MakeModel("gpt2", TinyGpt2, DType.F32);
        string output = Path.Combine(_root, "out-gpt2");
        var config = new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true };
        var quantized = QuantizedCheckpoint.Write(model, output, config);
        Assert.Equal(["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight", "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"],
            quantized.Order(StringComparer.Ordinal));

        using var source = SafetensorsCheckpoint.Open(model);
        var layers = QuantizedCheckpoint.ReadLinears(output);
        try
        {
            var layer = layers["transformer.h.0.mlp.c_fc"];
            Assert.Equal(new long[] { 96, 24 }, layer.Weight.State.Shape);
            var stored = source["transformer.h.0.mlp.c_fc.weight"].ToFloat32(); // [in 24, out 96]
            var transposed = new float[96 * 24];
            for (int i = 0; i < 24; i++) for (int o = 0; o < 96; o++) transposed[o * 24 + i] = stored[i * 96 + o];
            using var expected = Quantized4BitTensor.Quantize(transposed, [96, 24], QuantType.Nf4, 64, doubleQuant: true);
            AssertSameTensor(expected, layer.Weight, "c_fc");
        }
        finally
        {
            foreach (var l in layers.Values) l.Dispose();
        }
    }

    [Fact]
    public void RefusesAnAlreadyQuantizedModelAndANon4BitConfig()
    {
        string model = MakeModel("gpt2-twice", TinyGpt2, DType.F32);
        string output = Path.Combine(_root, "out-twice");
        var config = new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4" };
        QuantizedCheckpoint.Write(model, output, config);
        Assert.Contains("already quantized", Assert.Throws<PeftSharpException>(() => QuantizedCheckpoint.Write(output, Path.Combine(_root, "x"), config)).Message);
        Assert.Contains("load_in_4bit", Assert.Throws<PeftSharpException>(() => QuantizedCheckpoint.Write(model, Path.Combine(_root, "y"), new BitsAndBytesConfig())).Message);
        Assert.Null(QuantizedCheckpoint.ReadConfig(model));
    }

    [Fact]
    public void QuantizeLinearsReplacesEveryBaseSlotButTheSkippedOnes()
    {
        using var model = FakeCausalLM.Create(TinyQwen2, seed: 3);
        var originals = model.Linears.ToDictionary(s => s.Name, s => ((DenseLinear)s.Layer).Weight.AsSpan().ToArray());
        var config = new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true };
        var quantized = QuantizedModel.QuantizeLinears(model, config);

        Assert.Equal(14, quantized.Count);
        Assert.IsType<DenseLinear>(model.Linears[^1].Layer);
        foreach (var slot in model.Linears.SkipLast(1))
        {
            var layer = Assert.IsType<Linear4Bit>(slot.Layer);
            using var expected = Quantized4BitTensor.Quantize(originals[slot.Name], [slot.Info.OutFeatures, slot.Info.InFeatures], QuantType.Nf4, 64, doubleQuant: true);
            AssertSameTensor(expected, layer.Weight, slot.Name);
        }
        Assert.Empty(QuantizedModel.QuantizeLinears(model, config)); // already 4-bit

        using var other = FakeCausalLM.Create(TinyQwen2, seed: 4);
        var skipMlp = new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", LlmInt8SkipModules = ["mlp", "lm_head"] };
        var names = QuantizedModel.QuantizeLinears(other, skipMlp);
        Assert.Equal(8, names.Count);
        Assert.All(names, n => Assert.Contains(".self_attn.", n));
        Assert.IsType<DenseLinear>(other.Linears.Single(s => s.Name == "model.layers.0.mlp.up_proj").Layer);

        using var tied = FakeCausalLM.Create(TinyGpt2, seed: 5);
        var everything = new BitsAndBytesConfig { LoadIn4bit = true, LlmInt8SkipModules = [] };
        Assert.Contains("tie_word_embeddings", Assert.Throws<PeftSharpException>(() => QuantizedModel.QuantizeLinears(tied, everything)).Message);
    }

    [Fact]
    public void QuantizeCommandWritesTheCheckpointAndReportsBadOptionsAsUserErrors()
    {
        string model = MakeModel("gpt2-cli", TinyGpt2, DType.F32);
        string output = Path.Combine(_root, "out-cli");
        var root = new System.CommandLine.RootCommand();
        root.Subcommands.Add(PeftSharp.Cli.Commands.QuantizeCommand.Create());
        var error = new StringWriter();
        int code = PeftSharp.Cli.CliRunner.Run(root,
            ["quantize", "--model", model, "--out", output, "--quant-type", "fp4", "--double-quant", "--blocksize", "128", "--compute-dtype", "bfloat16"], error);
        Assert.Equal(0, code);
        var config = QuantizedCheckpoint.ReadConfig(output)!;
        Assert.Equal(("fp4", true, "bfloat16", true), (config.Bnb4bitQuantType, config.Bnb4bitUseDoubleQuant, config.Bnb4bitComputeDtype, config.LoadIn4bit));
        using (var result = SafetensorsCheckpoint.Open(output))
            Assert.Contains("\"blocksize\": 128", System.Text.Encoding.UTF8.GetString(result["transformer.h.0.mlp.c_fc.weight.quant_state.bitsandbytes__fp4"].Bytes));

        code = PeftSharp.Cli.CliRunner.Run(root, ["quantize", "--model", model, "--out", Path.Combine(_root, "bad"), "--blocksize", "100"], error);
        Assert.Equal(PeftSharp.Cli.CliRunner.UserError, code);
        Assert.Contains("blocksize", error.ToString());
    }

    private static void AssertSameTensor(Quantized4BitTensor expected, Quantized4BitTensor actual, string what)
    {
        Assert.True(expected.Packed.Span.SequenceEqual(actual.Packed.Span), what + " packed bytes");
        var (e, a) = (expected.State, actual.State);
        Assert.Equal((e.QuantType, e.BlockSize, e.DType, e.Offset, e.IsNested), (a.QuantType, a.BlockSize, a.DType, a.Offset, a.IsNested));
        Assert.Equal(e.Shape, a.Shape);
        Assert.Equal(e.DequantizeAbsmax(), a.DequantizeAbsmax());
        if (e.IsNested)
        {
            Assert.Equal(e.QuantizedAbsmax!, a.QuantizedAbsmax!);
            Assert.Equal(e.Nested!.Absmax, a.Nested!.Absmax);
        }
    }

    /// <summary>An ICausalLM with only its linear slots (DenseLinear, random weights): enough for QuantizeLinears.</summary>
    private sealed class FakeCausalLM : ICausalLM
    {
        private FakeCausalLM(ModelConfig config, List<LinearSlot> slots)
        {
            Config = config;
            Linears = slots;
        }

        public static FakeCausalLM Create(string configJson, int seed)
        {
            var config = ModelConfig.Parse(configJson);
            var slots = new List<LinearSlot>();
            var rng = new Rng((ulong)seed);
            foreach (var info in ModelSkeleton.FromConfig(config).Linears)
            {
                var layer = DenseLinear.Create(info, trainable: false);
                rng.FillNormal(layer.Weight.AsSpan(), 0f, 0.05f);
                if (layer.Bias != null) rng.FillNormal(layer.Bias.AsSpan(), 0f, 0.05f);
                slots.Add(new LinearSlot(info, layer));
            }
            return new FakeCausalLM(config, slots);
        }

        public ModelConfig Config { get; }
        public IReadOnlyList<LinearSlot> Linears { get; }
        public IEnumerable<Parameter> Parameters => Linears.SelectMany(s => s.Layer.Parameters);
        public Tensor Forward(Ops ops, TokenBatch batch) => throw new NotSupportedException();
        public Tensor Loss(Ops ops, TokenBatch batch) => throw new NotSupportedException();
        public IDecodeSession StartDecoding(int batch, int maxTokens) => throw new NotSupportedException();
        public void Dispose()
        {
            foreach (var slot in Linears) slot.Layer.Dispose();
        }
    }
}

public sealed class QuantizedCheckpointLoadTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-bnbload").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public unsafe void APreQuantizedCheckpointLoadsAsItsFourBitLayersAndMatchesQuantizeOnLoad()
    {
        string model = Path.Combine(_root, "model"), quantized = Path.Combine(_root, "nf4");
        PeftSharp.Models.Init.ModelInitializer.Write(model, new PeftSharp.Models.Init.InitModelOptions { Architecture = "qwen2", Preset = "tiny", Seed = 4 });
        var bnb = new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true };
        QuantizedCheckpoint.Write(model, quantized, bnb);

        using var loaded = QuantizedModel.Load(quantized);
        using var onLoad = PeftSharp.Models.CausalLM.Load(model);
        QuantizedModel.QuantizeLinears(onLoad, bnb);
        Assert.All(loaded.Linears.Where(s => !s.Info.IsOutputLayer), s => Assert.IsType<Linear4Bit>(s.Layer));

        var batch = new PeftSharp.Models.TokenBatch(1, 6, [3, 9, 27, 81, 12, 5]);
        using var tape = new PeftSharp.Autograd.Tape();
        var ops = new PeftSharp.Autograd.Ops(tape);
        var a = loaded.Forward(ops, batch).AsSpan().ToArray();
        var b = onLoad.Forward(ops, batch).AsSpan().ToArray();
        Assert.Equal(b, a);
    }
}
