using System.Text.Json.Nodes;
using PeftSharp.Training.Rl;

namespace PeftSharp.Tests.Training.Rl;

/// <summary>
/// GRPO's advantages, loss and gradient for every loss_type and scale_rewards against a PyTorch reference written from TRL's
/// GRPOTrainer (Golden/grpo/reference.py, torch 1.13, float64; regenerate with /usr/bin/python3 reference.py > reference.json),
/// and hand-computed group advantages and reward weighting.
/// </summary>
public sealed class GrpoLossTests
{
    private static readonly JsonObject Golden = (JsonObject)JsonNode.Parse(File.ReadAllText(
        Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "grpo", "reference.json")))!;

    private static double[][] Matrix(JsonNode? node) => node!.AsArray().Select(r => r!.AsArray().Select(x => x == null ? double.NaN : x.GetValue<double>()).ToArray()).ToArray();
    private static double[] Vector(JsonNode? node) => node!.AsArray().Select(x => x!.GetValue<double>()).ToArray();

    [Fact]
    public void LossGradientAndAdvantagesEqualTheTorchReferenceForEveryLossType()
    {
        var mask = Matrix(Golden["mask"]).Select(r => r.Select(x => x == 1).ToArray()).ToArray();
        var logps = Matrix(Golden["logps"]);
        var old = Matrix(Golden["old"]);
        var reference = Matrix(Golden["ref"]);
        var perFunction = Matrix(Golden["rewards_per_func"]);
        var weights = Vector(Golden["weights"]);
        int g = (int)Golden["num_generations"]!, cases = 0;
        foreach (var c in Golden["cases"]!.AsArray().Cast<JsonObject>())
        {
            string scale = (string)c["scale_rewards"]!, lossType = (string)c["loss_type"]!;
            var (rewards, advantages, _) = GrpoLoss.Advantages(perFunction, weights, g, scale);
            Assert.Equal(Vector(c["rewards"]), rewards, (a, b) => Math.Abs(a - b) < 1e-9);
            Assert.Equal(Vector(c["advantages"]), advantages, (a, b) => Math.Abs(a - b) < 1e-9);
            var options = new GrpoOptions
            {
                NumGenerations = g, LossType = lossType, Beta = (double)c["beta"]!, Epsilon = (double)Golden["epsilon"]!,
                EpsilonHigh = (double)Golden["epsilon_high"]!, MaxCompletionLength = (int)Golden["max_completion_length"]!,
            };
            var (loss, gradient, metrics) = GrpoLoss.Compute(options, logps, (bool)c["use_old"]! ? old : null, reference, advantages, mask);
            string what = $"{lossType}/{scale}/beta {c["beta"]}/old {c["use_old"]}";
            Assert.True(Math.Abs(loss - (double)c["loss"]!) < 1e-9, $"{what}: loss {loss} vs {c["loss"]}");
            var expected = Matrix(c["grad"]);
            for (int i = 0; i < expected.Length; i++)
                for (int t = 0; t < expected[i].Length; t++)
                    Assert.True(Math.Abs(expected[i][t] - gradient[i][t]) < 1e-9, $"{what}: d/dlogp[{i},{t}] {gradient[i][t]} vs {expected[i][t]}");
            Assert.Equal((double)c["clip_low"]!, metrics["clip_ratio/low_mean"], 12);
            Assert.Equal((double)c["clip_high"]!, metrics["clip_ratio/high_mean"], 12);
            Assert.Equal((double)c["clip_region"]!, metrics["clip_ratio/region_mean"], 12);
            if (options.Beta != 0) Assert.Equal((double)c["kl"]!, metrics["kl"], 9);
            if ((bool)c["use_old"]!) Assert.True(metrics["clip_ratio/region_mean"] > 0, $"{what}: the old log-probs should clip some tokens");
            cases++;
        }
        Assert.Equal(36, cases);
    }

    [Fact]
    public void WithOneIterationTheRatioIsOneAndTheClippedTermEqualsTheUnclipped()
    {
        var logps = new[] { new[] { -1.0, -2.0, -0.5 }, new[] { -0.1, -3.0, -1.0 } };
        var mask = logps.Select(r => r.Select(_ => true).ToArray()).ToArray();
        double[] adv = [0.7, -0.7];
        foreach (var lossType in GrpoOptions.LossTypes)
        {
            var clipped = GrpoLoss.Compute(new GrpoOptions { NumGenerations = 2, LossType = lossType, Epsilon = 0.2 }, logps, null, null, adv, mask);
            var unclipped = GrpoLoss.Compute(new GrpoOptions { NumGenerations = 2, LossType = lossType, Epsilon = 1e9 }, logps, null, null, adv, mask);
            var sameOld = GrpoLoss.Compute(new GrpoOptions { NumGenerations = 2, LossType = lossType, Epsilon = 0.2 }, logps, logps, null, adv, mask);
            Assert.Equal(unclipped.Loss, clipped.Loss);
            Assert.Equal(sameOld.Loss, clipped.Loss);
            for (int i = 0; i < 2; i++)
            {
                Assert.Equal(unclipped.Gradient[i], clipped.Gradient[i]);
                Assert.Equal(sameOld.Gradient[i], clipped.Gradient[i]);
            }
            Assert.Equal(0, clipped.Metrics["clip_ratio/region_mean"]);
        }
        // The ratio is 1, so the loss is −mean advantage (grpo: per-sequence token means, then the mean over sequences).
        var grpo = GrpoLoss.Compute(new GrpoOptions { NumGenerations = 2, LossType = "grpo" }, logps, null, null, adv, mask);
        Assert.Equal(0, grpo.Loss, 12);
        Assert.Equal(-0.7 / 3 / 2, grpo.Gradient[0][0], 12);
    }

    [Fact]
    public void GroupAdvantagesAndRewardWeightsMatchHandComputedValues()
    {
        // Two prompts × two completions, two functions weighted 2 and −1 (a NaN score is left out of the sum).
        double[][] perFunction = [[1, 0], [0, 1], [0.5, double.NaN], [0.5, 0.5]];
        var (rewards, advantages, std) = GrpoLoss.Advantages(perFunction, [2.0, -1.0], 2, "group");
        Assert.Equal(new[] { 2.0, -1.0, 1.0, 0.5 }, rewards);
        // Group 1: mean 0.5, std √4.5; group 2: mean 0.75, std √0.125 (unbiased).
        Assert.Equal(1.5 / (Math.Sqrt(4.5) + 1e-4), advantages[0], 12);
        Assert.Equal(-1.5 / (Math.Sqrt(4.5) + 1e-4), advantages[1], 12);
        Assert.Equal(0.25 / (Math.Sqrt(0.125) + 1e-4), advantages[2], 12);
        Assert.Equal(Math.Sqrt(0.125), std[3], 12);
        var none = GrpoLoss.Advantages(perFunction, [2.0, -1.0], 2, "none").Advantages;
        Assert.Equal(new[] { 1.5, -1.5, 0.25, -0.25 }, none);
        // Batch: one std over all four rewards (mean 0.625; Σ(r−mean)² = 1.890625+2.640625+0.140625+0.015625 = 4.6875).
        var batch = GrpoLoss.Advantages(perFunction, [2.0, -1.0], 2, "batch");
        Assert.Equal(1.5 / (Math.Sqrt(4.6875 / 3) + 1e-4), batch.Advantages[0], 12);
        Assert.All(batch.Std, s => Assert.Equal(Math.Sqrt(4.6875 / 3), s, 12));
        // Equal rewards in a group: advantage 0, not NaN.
        Assert.Equal(new[] { 0.0, 0.0 }, GrpoLoss.Advantages([[1], [1]], null, 2, "group").Advantages);
    }

    [Fact]
    public void AMaskedTruncatedCompletionAddsNothingToTheLoss()
    {
        var logps = new[] { new[] { -1.0, -2.0 }, new[] { -0.5, -0.25, -3.0 } };
        double[] adv = [1, -1];
        var masked = new[] { new[] { true, true }, new[] { false, false, false } };
        var options = new GrpoOptions { NumGenerations = 2, LossType = "dapo", Beta = 0.1 };
        var reference = new[] { new[] { -1.5, -1.0 }, new[] { -9.0, -9.0, -9.0 } };
        var (loss, gradient, metrics) = GrpoLoss.Compute(options, logps, null, reference, adv, masked);
        Assert.Equal(new double[3], gradient[1]);
        // Only the first completion's two tokens: −A + β·k3 per token, averaged over 2 tokens.
        double K(double r, double l) => Math.Exp(r - l) - (r - l) - 1;
        Assert.Equal((-1 + 0.1 * K(-1.5, -1.0) + -1 + 0.1 * K(-1.0, -2.0)) / 2, loss, 12);
        Assert.Equal((K(-1.5, -1.0) + K(-1.0, -2.0)) / 2, metrics["kl"], 12);
    }
}
