using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Models.Init;
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
}
