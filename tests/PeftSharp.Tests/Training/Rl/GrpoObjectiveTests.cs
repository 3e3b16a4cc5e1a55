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
        var seq = batch.Sequences;
        var perToken = GrpoObjective.PerToken(model.TokenLogProbsAt(ops, seq.Tokens, seq.Positions, seq.PositionTargets), batch);
        var sums = seq.LogProbSumsNoGrad(model, ops);
        // Against the log-probs of every position of the padded rows: completion i's token j is predicted at prompt length − 1 + j.
        var whole = model.TokenLogProbs(ops, seq.Tokens, seq.Targets).AsSpan().ToArray();
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(generated[i].Tokens.Length, perToken[i].Length);
            Assert.Equal(sums[i], perToken[i].Sum(), 4);
            Assert.All(perToken[i], v => Assert.True(v < 0));
            for (int j = 0; j < perToken[i].Length; j++)
                Assert.InRange(perToken[i][j] - whole[i * seq.Tokens.SeqLen + batch.PromptLengths[i] - 1 + j], -1e-4, 1e-4);
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
        var options = new GrpoOptions { NumGenerations = 3, MaxCompletionLength = 5, StepsPerGeneration = 2, Beta = 0.04, Epsilon = 0.02, EpsilonHigh = 0.03, LossType = "grpo" };
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
            try { return GrpoObjective.PerToken(model.TokenLogProbsAt(ops, b.Sequences.Tokens, b.Sequences.Positions, b.Sequences.PositionTargets), b); }
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
        CompareWithTorch(options, current, second.OldLogps!, reference, second.Advantages, second.Mask, result.Loss);
        // A third micro-batch starts the next cycle: a new generation.
        objective.BeforeCollate(3, 0, 13, cyclePosition: 0);
        Assert.NotSame(second, objective.Collate([0, 1]));
        Assert.Contains("no rollouts", Assert.Throws<PeftSharpException>(() =>
        {
            objective.BeforeCollate(4, 0, 14, cyclePosition: 1);
            objective.Collate([1, 0]);
        }).Message);
    }

    private static readonly string GoldenDir = Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "grpo");

    /// <summary>
    /// The real log-probs of the buffered slice (π after the weights moved, π_old of the sampling weights, the reference) are
    /// Golden/grpo/reused_rollout_input.json (written by this test with PEFTSHARP_WRITE_GRPO_FIXTURE=1, and checked to be what
    /// the model gives now); reference.py --reused computes TRL's loss and d loss / d logp on them in torch (reused_rollout.json).
    /// The objective's loss through Accumulate and GrpoLoss's gradient equal torch's within 1e-5, with ratios outside the clip.
    /// </summary>
    private static void CompareWithTorch(GrpoOptions options, double[][] current, double[][] old, double[][] reference, double[] advantages, bool[][] mask, double loss)
    {
        string input = Path.Combine(GoldenDir, "reused_rollout_input.json");
        static JsonArray M(double[][] x) => new([.. x.Select(r => (JsonNode)new JsonArray([.. r.Select(v => (JsonNode)v)]))]);
        if (Environment.GetEnvironmentVariable("PEFTSHARP_WRITE_GRPO_FIXTURE") == "1")
            File.WriteAllText(input, new JsonObject
            {
                ["logps"] = M(current), ["old"] = M(old), ["ref"] = M(reference), ["advantages"] = new JsonArray([.. advantages.Select(a => (JsonNode)a)]),
                ["mask"] = M([.. mask.Select(r => r.Select(b => b ? 1.0 : 0.0).ToArray())]), ["beta"] = options.Beta, ["epsilon"] = options.Epsilon,
                ["epsilon_high"] = options.EpsilonHighOrLow, ["loss_type"] = options.LossType, ["max_completion_length"] = options.MaxCompletionLength,
            }.ToJsonString() + "\n");
        var fixture = (JsonObject)JsonNode.Parse(File.ReadAllText(input))!;
        static double[][] R(JsonNode? n) => [.. n!.AsArray().Select(r => r!.AsArray().Select(v => v!.GetValue<double>()).ToArray())];
        double[][] fLogps = R(fixture["logps"]), fOld = R(fixture["old"]), fRef = R(fixture["ref"]);
        var fAdvantages = fixture["advantages"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
        var fMask = R(fixture["mask"]).Select(r => r.Select(v => v == 1).ToArray()).ToArray();
        var torch = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(GoldenDir, "reused_rollout.json")))!;
        Assert.True((double)torch["clip_region"]! > 0, "the fixture's ratios should leave the clip range");
        // GrpoLoss on the fixture's real numbers is torch's.
        var (fixtureLoss, gradient, metrics) = GrpoLoss.Compute(options, fLogps, fOld, fRef, fAdvantages, fMask);
        Assert.True(Math.Abs((double)torch["loss"]! - fixtureLoss) < 1e-5, $"loss {fixtureLoss} vs torch {torch["loss"]}");
        var expected = R(torch["grad"]);
        for (int i = 0; i < gradient.Length; i++)
            for (int t = 0; t < gradient[i].Length; t++) Assert.True(Math.Abs(expected[i][t] - gradient[i][t]) < 1e-5, $"d/dlogp[{i},{t}] {gradient[i][t]} vs torch {expected[i][t]}");
        // And the objective's own loss through Accumulate is torch's when this machine samples the fixture's completions (a
        // different SIMD path can round a logit differently and sample another token, and then the numbers are another rollout's).
        bool same = fLogps.Length == current.Length && fLogps.Zip(current).All(p => p.First.Length == p.Second.Length
            && p.First.Zip(p.Second).All(v => Math.Abs(v.First - v.Second) < 1e-5)) && fOld.Zip(old).All(p => p.First.Zip(p.Second).All(v => Math.Abs(v.First - v.Second) < 1e-5));
        if (same) Assert.True(Math.Abs((double)torch["loss"]! - loss) < 1e-5, $"Accumulate's loss {loss} vs torch {torch["loss"]}");
        Assert.Equal((double)torch["clip_region"]!, metrics["clip_ratio/region_mean"], 9);
    }
}
