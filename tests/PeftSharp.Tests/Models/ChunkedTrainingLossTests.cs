using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Planning;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>A training loss whose logits exceed the budget goes by row chunks: same loss and gradients, less memory, as planned.</summary>
public class ChunkedTrainingLossTests
{
    private static LlamaConfig WideVocabulary() => new("llama")
    {
        VocabSize = 40_000, HiddenSize = 16, IntermediateSize = 32, LayerCount = 1, HeadCount = 2, KeyValueHeadCount = 1,
        HeadDim = 8, MaxPositionEmbeddings = 1024, TieWordEmbeddings = false,
    };

    [Fact]
    public void ChunkedLossMatchesTheWholeLogitsAndHoldsLess()
    {
        var config = WideVocabulary();
        const int batch = 2, seq = 1024, rows = batch * seq;
        int chunk = CausalLM.LossChunkRows(rows, config.VocabSize);
        Assert.InRange(chunk, CausalLM.MinLossChunkRows, rows - 1);

        var model = CausalLM.CreateRandom(config, new Rng(3));
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames(["q_proj", "v_proj"]) }, rng: new Rng(4));
        foreach (var p in peft.TrainableParameters.Where(p => p.Name.Contains("lora_B"))) new Rng(5).FillNormal(p.AsSpan(), 0f, 0.1f);
        var rng = new Rng(6);
        var tokens = new TokenBatch(batch, seq, Enumerable.Range(0, rows).Select(_ => rng.NextInt(config.VocabSize)).ToArray())
        {
            Labels = Enumerable.Range(0, rows).Select(i => i % 7 == 0 ? -100 : (i * 13) % config.VocabSize).ToArray(),
        };

        (float Loss, float[][] Grads, long Peak) Step(bool chunked)
        {
            foreach (var p in peft.TrainableParameters) p.GradSpan().Clear();
            using var tape = new Tape(1 << 16);
            var ops = new Ops(tape);
            var loss = chunked ? model.Loss(ops, tokens) : ops.CrossEntropy(model.Forward(ops, tokens), tokens.ShiftedTargets());
            tape.Backward(loss);
            return (loss.AsSpan()[0], peft.TrainableParameters.Select(p => p.GradSpan().ToArray()).ToArray(), tape.Arena.HighWater * sizeof(float));
        }

        var whole = Step(chunked: false);
        var chunkedStep = Step(chunked: true);
        Assert.InRange(chunkedStep.Loss - whole.Loss, -1e-5f, 1e-5f);
        for (int i = 0; i < whole.Grads.Length; i++)
        {
            Assert.Contains(whole.Grads[i], v => v != 0f);
            float scale = whole.Grads[i].Max(Math.Abs);
            Assert.True(ModelGolden.MaxAbsDiff(whole.Grads[i], chunkedStep.Grads[i]) <= 1e-4f * scale, $"gradient {i}");
        }
        long logits = (long)rows * config.VocabSize * sizeof(float);
        Assert.True(whole.Peak - chunkedStep.Peak > logits / 8, $"arena peak {chunkedStep.Peak:N0} B chunked vs {whole.Peak:N0} B whole");

        long planned = MemoryPlanner.ActivationBytes(config, rows, peft.LoraLayers.Count() * 4L, checkpointing: false);
        double error = Math.Abs(planned - chunkedStep.Peak) / (double)chunkedStep.Peak;
        Assert.True(error <= Planning.ActivationMemoryTests.Tolerance, $"planned {planned:N0} B vs measured {chunkedStep.Peak:N0} B: off by {error:P1}");
    }
}
