using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

public class InferenceMemoryTests
{
    [Fact]
    public void ANoGradForwardKeepsOneLayerOfActivationsAndTheSameLogits()
    {
        var config = new LlamaConfig("llama")
        {
            VocabSize = 97, HiddenSize = 64, IntermediateSize = 192, LayerCount = 6, HeadCount = 4, KeyValueHeadCount = 2,
            HeadDim = 16, MaxPositionEmbeddings = 128,
        };
        var batch = new TokenBatch(2, 48, Enumerable.Range(0, 96).Select(i => (i * 31) % 97).ToArray());

        // With a trainable norm every layer records backward nodes and keeps its activations.
        using var trainable = CausalLM.CreateRandom(config, new Rng(3), new LoadOptions { Trainable = n => n.EndsWith("input_layernorm.weight") });
        using var frozen = CausalLM.CreateRandom(config, new Rng(3));
        (float[] Logits, long Peak) Run(CausalLM model, bool grad)
        {
            using var tape = new Tape(1 << 10) { GradEnabled = grad };
            var logits = model.Forward(new Ops(tape), batch).AsSpan().ToArray();
            return (logits, tape.Arena.HighWater);
        }

        var kept = Run(trainable, grad: true);
        var released = Run(frozen, grad: false);
        Assert.Equal(kept.Logits, released.Logits);
        long logits = 96L * 97, oneLayer = kept.Peak / config.LayerCount;
        Assert.True(released.Peak < kept.Peak / 3, $"no-grad arena peak {released.Peak} floats vs {kept.Peak} with every layer kept");
        Assert.True(released.Peak < logits + 3 * oneLayer, $"no-grad arena peak {released.Peak} floats");
    }
}
