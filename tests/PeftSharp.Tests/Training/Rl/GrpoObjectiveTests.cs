using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using PeftSharp.Training.Preference;
using PeftSharp.Training.Rl;

namespace PeftSharp.Tests.Training.Rl;

/// <summary>GrpoObjective's scoring of given completions: masks of truncated completions, metrics, and the per-token log-probs it trains on.</summary>
public sealed class GrpoObjectiveTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-grpo-obj").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void TruncatedCompletionsAreMaskedAndTheTrainingLogProbsAreTheCompletionTokens()
    {
        string dir = Path.Combine(_root, "model");
        ModelInitializer.Write(dir, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 5 });
        using var model = CausalLM.Load(dir);
        var tokenizer = Tokenizer.FromFolder(dir);
        var prompts = new List<GrpoPrompt> { new("Say one", new JsonObject { ["answer"] = "1" }) };
        var options = new GrpoOptions { NumGenerations = 2, MaxCompletionLength = 3, MaskTruncatedCompletions = true, LossType = "grpo" };
        var objective = new GrpoObjective(model, tokenizer, options, prompts, Rewards.Parse(["numeric:answer"]), null, [0]);
        var p = tokenizer.Encode("Say one", addSpecialTokens: false);
        int[] one = tokenizer.Encode(" 1", addSpecialTokens: false), two = tokenizer.Encode(" 2 3", addSpecialTokens: false);
        var generated = new List<GeneratedSequence>
        {
            new([.. one, 0], FinishReason.Eos, null),      // right and terminated: reward 1
            new(two[..Math.Min(3, two.Length)], FinishReason.Length, null),   // wrong and truncated: reward 0, masked
        };
        var batch = objective.Score([p, p], [0, 0], generated);
        Assert.All(batch.Mask[0], Assert.True);
        Assert.All(batch.Mask[1], Assert.False);
        Assert.Equal(0.5 / (Math.Sqrt(0.5) + 1e-4), batch.Advantages[0], 12);   // rewards 1, 0: mean 0.5, std √0.5
        Assert.Equal(0.5, batch.Metrics["reward"]);
        Assert.Equal(0.5, batch.Metrics["rewards/numeric/mean"]);
        Assert.Equal(0.5, batch.Metrics["completions/clipped_ratio"]);
        Assert.Equal(generated[0].Tokens.Length, batch.Metrics["completions/mean_terminated_length"]);
        Assert.Equal(2, objective.TargetCount(batch));

        // The per-token log-probs GRPO trains on are exactly the completion tokens' (their sums are the preference sums).
        using var tape = new Tape();
        var ops = new Ops(tape);
        tape.GradEnabled = false;
        var perToken = GrpoObjective.PerToken(model.TokenLogProbs(ops, batch.Sequences.Tokens, batch.Sequences.Targets), batch);
        var sums = batch.Sequences.LogProbSumsNoGrad(model, ops);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(generated[i].Tokens.Length, perToken[i].Length);
            Assert.Equal(sums[i], perToken[i].Sum(), 4);
            Assert.All(perToken[i], v => Assert.True(v < 0));
        }
    }

    [Fact]
    public unsafe void ABufferedRolloutTrainsAfterTheWeightsMovedWithTheRatioToTheSamplingWeights()
    {
        string dir = Path.Combine(_root, "model-buffer");
        ModelInitializer.Write(dir, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 5 });
        using var model = CausalLM.Load(dir);
        var tokenizer = Tokenizer.FromFolder(dir);
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames(["c_attn"]) }, rng: new Rng(2));
        var prompts = new List<GrpoPrompt> { new("Count to", new JsonObject()), new("Say a word", new JsonObject()) };
        // steps_per_generation 2 with gradient_accumulation_steps 1: the second slice trains one optimizer step after its sampling.
        var options = new GrpoOptions { NumGenerations = 3, MaxCompletionLength = 5, StepsPerGeneration = 2, Beta = 0.04, EpsilonHigh = 0.28, LossType = "grpo" };
        var objective = new GrpoObjective(model, tokenizer, options, prompts, [Rewards.FromFunc("len", r => r.Completion.Length)],
            new DisabledAdapterReference(peft), [], gradientAccumulationSteps: 1);
        Assert.True(objective.UsesOldLogProbs);
        objective.BeforeCollate(1, 0, 11, cyclePosition: 0);
        var first = objective.Collate([0, 1]);
        Assert.Equal(3, first.Advantages.Length);   // 6 completions shuffled into 2 slices of 3
        using var tape = new Tape();
        var ops = new Ops(tape);
        double[][] NoGrad(GrpoBatch b)
        {
            tape.GradEnabled = false;
            tape.Training = false;
            try { return GrpoObjective.PerToken(model.TokenLogProbs(ops, b.Sequences.Tokens, b.Sequences.Targets), b); }
            finally { tape.Reset(); tape.GradEnabled = true; tape.Training = true; }
        }
        // π_old is the sampling weights' log-probs, computed at generation time.
        var now = NoGrad(first);
        for (int i = 0; i < now.Length; i++) Assert.Equal(now[i], first.OldLogps![i]);
        // The weights move (an optimizer step); the next micro-batch is the buffer's second slice, not a new generation.
        foreach (var p in peft.TrainableParameters.Where(p => p.Name.Contains("lora_B")))
            for (long k = 0; k < p.Length; k++) p.Data[k] = 0.05f * MathF.Sin(k);
        objective.BeforeCollate(2, 0, 12, cyclePosition: 1);
        var second = objective.Collate([0, 1]);
        Assert.Equal(3, second.Advantages.Length);
        Assert.DoesNotContain(second.Completions, c => first.Completions.Contains(c));
        var current = NoGrad(second);
        double[][] reference;
        using (new DisabledAdapterReference(peft).Enter()) reference = NoGrad(second);
        Assert.Contains(current.Zip(second.OldLogps!), row => row.First.Zip(row.Second).Any(t => Math.Abs(t.First - t.Second) > 1e-3));
        var (expected, _, _) = GrpoLoss.Compute(options, current, second.OldLogps, reference, second.Advantages, second.Mask);
        var (withRatioOne, _, _) = GrpoLoss.Compute(options, current, null, reference, second.Advantages, second.Mask);
        Assert.NotEqual(withRatioOne, expected, 6);
        var result = objective.Accumulate(tape, second, 1.0);
        Assert.Equal(expected, result.Loss, 5);
        // A third micro-batch starts the next cycle: a new generation.
        objective.BeforeCollate(3, 0, 13, cyclePosition: 0);
        Assert.NotSame(second, objective.Collate([0, 1]));
        Assert.Contains("no rollouts", Assert.Throws<PeftSharpException>(() =>
        {
            objective.BeforeCollate(4, 0, 14, cyclePosition: 1);
            objective.Collate([1, 0]);
        }).Message);
    }
}
