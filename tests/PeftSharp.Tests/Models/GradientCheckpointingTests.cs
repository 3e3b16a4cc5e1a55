using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

public class GradientCheckpointingTests
{
    private static Dictionary<string, float[]> Gradients(CausalLM model, TokenBatch batch, out float loss, out long highWater) =>
        Gradients(model, batch, out loss, out highWater, out _);

    /// <param name="skipped">The frozen products the recomputation skipped (<see cref="Tape.SkipsUnreadProduct"/>).</param>
    private static Dictionary<string, float[]> Gradients(CausalLM model, TokenBatch batch, out float loss, out long highWater, out long skipped)
    {
        using var tape = new Tape(1024);
        var l = model.Loss(new Ops(tape), batch);
        tape.Backward(l);
        loss = l.AsSpan()[0];
        highWater = tape.Arena.HighWater;
        skipped = tape.SkippedProducts;
        return model.Parameters.ToDictionary(p => p.Name, p => p.GradSpan().ToArray());
    }

    [Theory]
    [InlineData("tiny-gpt2")]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen2")]
    public void GivesTheSameGradients(string name)
    {
        using var golden = SafetensorsFile.Open(Path.Combine(ModelGolden.Folder(name), "golden.safetensors"));
        var batch = ModelGolden.Batch(golden);
        using var plain = CausalLM.Load(ModelGolden.Folder(name), new LoadOptions { FullFineTune = true });
        using var checkpointed = CausalLM.Load(ModelGolden.Folder(name), new LoadOptions { FullFineTune = true, GradientCheckpointing = true });
        var want = Gradients(plain, batch, out float wantLoss, out _, out long plainSkipped);
        var got = Gradients(checkpointed, batch, out float gotLoss, out _, out long skipped);
        Assert.Equal(wantLoss, gotLoss);
        // Each layer's last product (down_proj, mlp.c_proj) is recomputed for its graph only: its values are never read.
        Assert.Equal(0, plainSkipped);
        Assert.Equal(checkpointed.Config.LayerCount, skipped);
        foreach (var (param, grad) in want)
            Assert.True(ModelGolden.MaxAbsDiff(got[param], grad) <= 1e-6f, param);
    }

    [Fact]
    public void KeepsOnlyLayerInputsSoTheArenaPeakDrops()
    {
        var config = (LlamaConfig)ModelConfig.Parse("""
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 6,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 128}
            """);
        using var model = CausalLM.CreateRandom(config, new Rng(7), new LoadOptions { FullFineTune = true });
        var rng = new Rng(3);
        var batch = new TokenBatch(2, 64, Enumerable.Range(0, 128).Select(_ => rng.NextInt(128)).ToArray());
        var want = Gradients(model, batch, out _, out long plainPeak);
        foreach (var p in model.Parameters) p.ZeroGrad();
        model.GradientCheckpointing = true;
        var got = Gradients(model, batch, out _, out long checkpointedPeak);
        Assert.True(checkpointedPeak < plainPeak * 0.6, $"peak {checkpointedPeak} floats with checkpointing vs {plainPeak} without");
        foreach (var (param, grad) in want)
            Assert.True(ModelGolden.MaxAbsDiff(got[param], grad) <= 1e-6f, param);
    }

    [Fact]
    public void DropoutMasksAreReplayedOnRecomputation()
    {
        using var w = Parameter.Create("w", [8, 8], requiresGrad: true);
        new Rng(1).FillNormal(w.AsSpan(), 0f, 0.5f);
        var grads = new List<float[]>();
        var nextDraws = new List<ulong>();
        foreach (bool checkpoint in new[] { false, true })
        {
            w.ZeroGrad();
            var rng = new Rng(42);
            using var tape = new Tape(1024);
            var ops = new Ops(tape);
            var x = ops.Embedding([0, 1, 2, 3], w);
            Tensor Body(Tensor h) => ops.Add(h, ops.Linear(ops.Dropout(h, 0.5f, rng), w));
            var y = checkpoint ? tape.Checkpoint(x, Body) : Body(x);
            tape.Backward(ops.CrossEntropy(y, [1, 2, 3, 4]));
            nextDraws.Add(rng.NextUInt64());
            grads.Add(w.GradSpan().ToArray());
        }
        Assert.Equal(grads[0], grads[1]);
        Assert.Equal(nextDraws[0], nextDraws[1]); // the generator ends where the forward left it
    }

    /// <summary>
    /// LoRA with dropout 0.1 on attention and on each layer's last product (down_proj, GPT-2's c_proj, whose frozen product the
    /// recomputation skips), over an f32 and a 4-bit base, and DoRA there (whose magnitude reads the base output, so nothing is
    /// skipped): gradient checkpointing recomputes each layer with the dropout masks it drew, so the adapter's gradients equal
    /// those without checkpointing.
    /// </summary>
    [Theory]
    [InlineData("tiny-llama", false, false)]
    [InlineData("tiny-llama", true, false)]
    [InlineData("tiny-llama", true, true)]
    [InlineData("tiny-gpt2", false, false)]
    [InlineData("tiny-gpt2", false, true)]
    public void LoraWithDropoutGivesTheSameGradients(string name, bool fourBit, bool dora)
    {
        using var golden = SafetensorsFile.Open(Path.Combine(ModelGolden.Folder(name), "golden.safetensors"));
        var batch = ModelGolden.Batch(golden);
        int layers = 0;
        Dictionary<string, float[]> Run(bool checkpointing, out float loss, out long skipped)
        {
            using var model = CausalLM.Load(ModelGolden.Folder(name), new LoadOptions { GradientCheckpointing = checkpointing });
            layers = model.Config.LayerCount;
            if (fourBit)
                PeftSharp.Quantization.QuantizedModel.QuantizeLinears(model,
                    new PeftSharp.Quantization.BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true });
            var config = new PeftSharp.Peft.LoraConfig
            {
                R = 4, LoraAlpha = 8, LoraDropout = 0.1, UseDora = dora,
                TargetModules = PeftSharp.Peft.TargetModules.FromNames(name.Contains("gpt2") ? ["c_attn", "c_proj"] : ["q_proj", "v_proj", "down_proj"]),
                InitLoraWeights = "false",
            };
            var peft = PeftSharp.Peft.PeftModel.Wrap(model, config, rng: new Rng(5));
            foreach (var slot in model.Linears) if (slot.Layer is IRandomStreams r) r.Reseed(99);
            var grads = Gradients(model, batch, out loss, out _, out skipped);
            return grads.Where(kv => kv.Key.Contains("lora_")).ToDictionary();
        }
        var want = Run(false, out float wantLoss, out long plainSkipped);
        var got = Run(true, out float gotLoss, out long skipped);
        Assert.NotEmpty(want);
        Assert.Contains(want.Keys, k => k.Contains(name.Contains("gpt2") ? "mlp.c_proj" : "down_proj"));
        Assert.Equal(wantLoss, gotLoss);
        Assert.Equal(0, plainSkipped);
        Assert.Equal(dora ? 0 : layers, skipped);
        foreach (var (param, grad) in want)
        {
            Assert.Contains(grad, g => g != 0f);
            Assert.True(ModelGolden.MaxAbsDiff(got[param], grad) <= 1e-6f, param);
        }
    }
}
