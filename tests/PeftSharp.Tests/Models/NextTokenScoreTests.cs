using System.Numerics.Tensors;
using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>Evaluation scores computed a block of vocabulary columns at a time equal those from the whole logits.</summary>
public unsafe class NextTokenScoreTests
{
    /// <summary>Loss, per-row losses and argmax from the full logits (the reference).</summary>
    private static (float Mean, float[] Losses, int[] Argmax) FromLogits(ICausalLM model, TokenBatch batch, int[] targets)
    {
        using var tape = new Tape { GradEnabled = false };
        var logits = model.Forward(new Ops(tape), batch);
        int rows = logits.Rows, vocab = logits.Columns;
        var losses = new float[rows];
        var lse = new float[rows];
        float mean;
        fixed (int* t = targets)
        fixed (float* l = losses, s = lse)
            mean = CrossEntropy.Forward(logits.Data, t, l, s, rows, vocab);
        var argmax = Enumerable.Range(0, rows).Select(r => TensorPrimitives.IndexOfMax(new ReadOnlySpan<float>(logits.Data + (long)r * vocab, vocab))).ToArray();
        return (mean, losses, argmax);
    }

    private static void AssertScoresMatch(ICausalLM model, TokenBatch batch)
    {
        var targets = batch.ShiftedTargets();
        var expected = FromLogits(model, batch, targets);
        int rows = targets.Length;
        var losses = new float[rows];
        var argmax = new int[rows];
        using var tape = new Tape();
        float mean = model.ScoreNextTokens(new Ops(tape), batch, targets, losses, argmax);
        Assert.True(tape.GradEnabled, "ScoreNextTokens restores the tape's gradient mode");
        Assert.Equal(0, tape.NodeCount);
        Assert.True(ModelGolden.MaxAbsDiff(expected.Losses, losses) < 1e-4f, $"max loss difference {ModelGolden.MaxAbsDiff(expected.Losses, losses)}");
        for (int r = 0; r < rows; r++)
            if (targets[r] != CrossEntropy.IgnoreIndex) Assert.Equal(expected.Argmax[r], argmax[r]);
        Assert.InRange(mean - expected.Mean, -1e-5f, 1e-5f);
    }

    [Theory]
    [InlineData("tiny-gpt2")]   // tied f32 head
    [InlineData("tiny-llama")]  // untied f32 head
    [InlineData("tiny-qwen2")]
    public void GoldenModelsScoreAsTheirLogits(string name)
    {
        using var model = CausalLM.Load(ModelGolden.Folder(name));
        using var golden = SafetensorsFile.Open(Path.Combine(ModelGolden.Folder(name), "golden.safetensors"));
        AssertScoresMatch(model, ModelGolden.Batch(golden));
    }

    private static LlamaConfig WideVocabulary() => new("llama")
    {
        VocabSize = 40_009, HiddenSize = 16, IntermediateSize = 32, LayerCount = 1, HeadCount = 2, KeyValueHeadCount = 1,
        HeadDim = 8, MaxPositionEmbeddings = 256, TieWordEmbeddings = false,
    };

    private static TokenBatch LongBatch(int vocab) =>
        new(2, 128, Enumerable.Range(0, 256).Select(i => (int)((i * 7919L) % vocab)).ToArray())
        {
            AttentionMask = Enumerable.Range(0, 256).Select(i => i >= 250 ? 0 : 1).ToArray(),
        };

    [Fact]
    public void AWideVocabularyIsScoredInBlocksWithoutHoldingTheLogits()
    {
        var config = WideVocabulary();
        using var model = CausalLM.CreateRandom(config, new Rng(5));
        var batch = LongBatch(config.VocabSize);
        int rows = 256;
        Assert.True(NextTokenScores.BlockWidth(rows, config.VocabSize) < config.VocabSize / 2, "the test must exercise several blocks");
        AssertScoresMatch(model, batch);

        using var tape = new Tape(1 << 10) { GradEnabled = false };
        var loss = model.Loss(new Ops(tape), batch);
        long logits = (long)rows * config.VocabSize;
        Assert.True(tape.Arena.HighWater < logits / 2, $"arena peak {tape.Arena.HighWater} floats; the logits alone are {logits}");
        var expected = FromLogits(model, batch, batch.ShiftedTargets()).Mean;
        Assert.InRange(loss.AsSpan()[0] - expected, -1e-5f, 1e-5f);
    }

    [Fact]
    public void AnAdapterOnTheOutputLayerIsScoredFromItsWholeLogits()
    {
        var config = WideVocabulary();
        var model = CausalLM.CreateRandom(config, new Rng(6));
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames(["lm_head"]) }, rng: new Rng(7));
        foreach (var p in model.Parameters.Where(p => p.Name.Contains("lora_B"))) new Rng(8).FillNormal(p.AsSpan(), 0f, 0.5f);
        var batch = LongBatch(config.VocabSize);
        AssertScoresMatch(model, batch);
    }

    /// <summary>
    /// TokenLogProbsAt (the output layer on the completion rows only) equals TokenLogProbs at those rows, values and adapter
    /// gradients, with and without gradients: 8 × 256 rows of a 40,009-token vocabulary are past the logits budget, so the
    /// whole-row path goes by row chunks (training) or vocabulary blocks (no grad); every other row is within it.
    /// </summary>
    [Theory]
    [InlineData(2)]   // every other position: the gathered rows fit the budget, the whole rows do not
    [InlineData(1)]   // every position: both paths past the budget
    public void LogProbsAtTheTargetRowsEqualTheWholeRowsAndTheirGradients(int stride)
    {
        var config = WideVocabulary();
        var model = CausalLM.CreateRandom(config, new Rng(15));
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames(["q_proj", "v_proj"]) }, rng: new Rng(16));
        foreach (var p in model.Parameters.Where(p => p.Name.Contains("lora_B"))) new Rng(17).FillNormal(p.AsSpan(), 0f, 0.5f);
        int b = 8, t = 256, rows = b * t;
        var ids = Enumerable.Range(0, rows).Select(i => (int)((i * 7919L + 13) % config.VocabSize)).ToArray();
        var batch = new TokenBatch(b, t, ids);
        var positions = Enumerable.Range(0, rows).Where(i => i % t != t - 1 && i % stride == 0).ToArray();
        var targets = positions.Select(i => ids[i + 1]).ToArray();
        var all = Enumerable.Repeat(CrossEntropy.IgnoreIndex, rows).ToArray();
        foreach (int i in positions) all[i] = ids[i + 1];
        Assert.True(CausalLM.LossChunkRows(rows, config.VocabSize) < rows, "the whole rows must exceed the logits budget");
        var weights = positions.Select((_, k) => Math.Sin(k) + 0.1).ToArray();
        var trainable = model.Parameters.Where(p => p.RequiresGrad).ToList();

        (float[] Values, float[][] Grads) Run(Func<Ops, PeftSharp.Tensors.Tensor> logps, bool atPositions, bool grad)
        {
            foreach (var p in trainable) p.ZeroGrad();
            using var tape = new Tape { GradEnabled = grad };
            var ops = new Ops(tape);
            var y = logps(ops);
            var values = atPositions ? y.AsSpan().ToArray() : positions.Select(i => y.AsSpan()[i]).ToArray();
            if (grad)
            {
                var dy = new double[y.Length];
                for (int k = 0; k < positions.Length; k++) dy[atPositions ? k : positions[k]] = weights[k];
                tape.Backward(ops.ScalarFunction(y, 0, dy));
            }
            return (values, trainable.Select(p => p.GradSpan().ToArray()).ToArray());
        }

        foreach (bool grad in new[] { true, false })
        {
            var whole = Run(ops => model.TokenLogProbs(ops, batch, all), atPositions: false, grad);
            var at = Run(ops => model.TokenLogProbsAt(ops, batch, positions, targets), atPositions: true, grad);
            Assert.True(ModelGolden.MaxAbsDiff(whole.Values, at.Values) < 1e-4f, $"grad {grad}: max log-prob difference {ModelGolden.MaxAbsDiff(whole.Values, at.Values)}");
            Assert.All(at.Values, v => Assert.True(v < 0 && float.IsFinite(v)));
            if (!grad) continue;
            for (int k = 0; k < trainable.Count; k++)
            {
                float scale = Math.Max(1e-3f, whole.Grads[k].Max(Math.Abs));
                Assert.True(ModelGolden.MaxAbsDiff(whole.Grads[k], at.Grads[k]) < 1e-3f * scale, $"{trainable[k].Name}: gradients differ by {ModelGolden.MaxAbsDiff(whole.Grads[k], at.Grads[k])} (scale {scale})");
            }
        }
    }

    /// <summary>At a temperature T the log-probs are those of logits / T (TRL's GRPO scores completions sampled at T so), from the whole logits in double.</summary>
    [Theory]
    [InlineData("tiny-gpt2", 0.7f)]
    [InlineData("tiny-llama", 1.5f)]
    public void LogProbsAtATemperatureAreThoseOfTheScaledLogits(string name, float temperature)
    {
        using var model = CausalLM.Load(ModelGolden.Folder(name));
        using var golden = SafetensorsFile.Open(Path.Combine(ModelGolden.Folder(name), "golden.safetensors"));
        var batch = ModelGolden.Batch(golden);
        var targets = batch.ShiftedTargets();
        var positions = Enumerable.Range(0, targets.Length).Where(i => targets[i] != CrossEntropy.IgnoreIndex).ToArray();
        using var tape = new Tape { GradEnabled = false };
        var ops = new Ops(tape);
        var logits = model.Forward(ops, batch);
        int vocab = logits.Columns;
        var scaled = logits.AsSpan().ToArray().Select(v => (double)v / temperature).ToArray();
        var expected = KernelReference.TokenLogProbs(scaled, targets, vocab);
        var at = model.TokenLogProbsAt(ops, batch, positions, positions.Select(i => targets[i]).ToArray(), temperature).AsSpan().ToArray();
        for (int k = 0; k < positions.Length; k++) Assert.InRange(at[k] - expected[positions[k]], -1e-4, 1e-4);
        var plain = model.TokenLogProbsAt(ops, batch, positions, positions.Select(i => targets[i]).ToArray()).AsSpan().ToArray();
        Assert.NotEqual(plain, at);
    }

    [Fact]
    public void TheNoGradLossEqualsTheTrainingLoss()
    {
        using var model = CausalLM.Load(ModelGolden.Folder("tiny-llama"), new LoadOptions { FullFineTune = true });
        using var golden = SafetensorsFile.Open(Path.Combine(ModelGolden.Folder("tiny-llama"), "golden.safetensors"));
        var batch = ModelGolden.Batch(golden);
        using var tape = new Tape();
        float withGrad = model.Loss(new Ops(tape), batch).AsSpan()[0];
        tape.Reset();
        tape.GradEnabled = false;
        float without = model.Loss(new Ops(tape), batch).AsSpan()[0];
        Assert.InRange(without - withGrad, -1e-5f, 1e-5f);
        Assert.InRange(withGrad, 1f, 20f);
    }
}
