using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Planning;
using PeftSharp.Tensors;
using PeftSharp.Training.Preference;
using PeftSharp.Training.Rl;
using Xunit.Abstractions;

namespace PeftSharp.Tests.Planning;

/// <summary>
/// The planner's GRPO parts against measured peaks (as <see cref="ActivationMemoryTests"/> measures them): the rollout against the
/// decoding session's KV cache, scores, kept layer outputs and arena high-water mark after generating num_generations completions
/// of each prompt, and the activations against the training tape's arena high-water mark of GrpoObjective.Accumulate (reference
/// forward with beta ≠ 0, then the policy's forward and backward), with LoRA dropout 0.1: within 15%.
/// </summary>
public class GrpoMemoryTests(ITestOutputHelper output)
{
    public static (long Rollout, long Training) Measure(string preset, string arch, int vocab, string targets, int batch, int g, int prompt, int completion, double beta)
    {
        var config = ModelPresets.CreateConfig(preset, arch, vocab);
        using var model = CausalLM.CreateRandom(config, new Rng(1));
        var lora = new LoraConfig { R = 8, LoraAlpha = 16, LoraDropout = 0.1, TargetModules = TargetModules.FromNames(targets.Split(',')) };
        using var peft = PeftModel.Wrap(model, lora, rng: new Rng(2));
        var rng = new Rng(3);
        int n = batch * g;
        var prompts = Enumerable.Range(0, n).Select(i => Enumerable.Range(0, prompt).Select(_ => rng.NextInt(vocab)).ToArray()).ToList();
        var options = new GenerationOptions { DoSample = true, MaxNewTokens = completion, Seed = 7, EosTokenIds = [], PadTokenId = 0 };
        IReadOnlyList<GeneratedSequence> generated;
        long rollout;
        using (var session = model.StartDecoding(n, prompt + completion))
        {
            generated = Generator.Generate(session, prompts, options);
            rollout = ((DecodeSession)session).PeakBytes;
        }
        var sequences = generated.Select((s, i) => new TokenizedSequence([.. prompts[i], .. s.Tokens], prompt)).ToArray();
        var batchOf = new GrpoBatch
        {
            Completions = sequences, Sequences = SequenceBatch.Build(sequences, 0), PromptLengths = [.. sequences.Select(_ => prompt)],
            Mask = [.. generated.Select(s => Enumerable.Repeat(true, s.Tokens.Length).ToArray())],
            Advantages = [.. Enumerable.Range(0, n).Select(i => i % 2 == 0 ? 1.0 : -1.0)], Metrics = [],
        };
        var tokenizer = Tokenizer.FromFolder(Path.Combine(TestAssets.RepoRoot, "..", "shared", "assets", "tokenizers", "gpt2"));
        var grpo = new GrpoOptions { NumGenerations = g, MaxCompletionLength = completion, Beta = beta, RewardFuncs = ["json"] };
        var objective = new GrpoObjective(model, tokenizer, grpo, [new GrpoPrompt("x", new JsonObject())], Rewards.Parse(grpo.RewardFuncs),
            beta != 0 ? new DisabledAdapterReference(peft) : null, []);
        using var tape = new Tape(1 << 16);
        objective.Accumulate(tape, batchOf, 1.0);
        return (rollout, tape.Arena.HighWater * sizeof(float));
    }

    [Theory]
    [InlineData("tiny", "gpt2", 1024, "c_attn", 2, 4, 16, 16, 0.04)]
    [InlineData("tiny", "llama", 1024, "q_proj,v_proj", 4, 2, 8, 24, 0.0)]
    [InlineData("small", "gpt2", 4096, "c_attn", 1, 8, 32, 48, 0.0)]
    [InlineData("small", "llama", 4096, "q_proj,v_proj", 2, 4, 24, 32, 0.04)]
    public void RolloutAndTrainingEstimatesAreWithinFifteenPercentOfTheMeasuredPeaks(string preset, string arch, int vocab, string targets, int batch, int g, int prompt, int completion, double beta)
    {
        var (r, t) = Measure(preset, arch, vocab, targets, batch, g, prompt, completion, beta);
        var config = ModelPresets.CreateConfig(preset, arch, vocab);
        var plan = MemoryPlanner.Make(config, new PlanRequest
        {
            BatchSize = batch, SeqLength = prompt, LoraRank = 8, TargetModules = TargetModules.FromNames(targets.Split(',')), LoraDropout = 0.1,
            Grpo = new GrpoPlanRequest(g, completion),
        });
        var lora = plan.Estimates[1];
        output.WriteLine($"{preset} {arch}: rollout {r:N0} est {lora.Rollout:N0} ({(lora.Rollout - r) / (double)r:P1}) training {t:N0} est {lora.Activations:N0} ({(lora.Activations - t) / (double)t:P1})");
        Assert.True(Math.Abs(lora.Rollout - r) <= ActivationMemoryTests.Tolerance * r, $"rollout estimate {lora.Rollout:N0} B vs measured {r:N0} B");
        Assert.True(Math.Abs(lora.Activations - t) <= ActivationMemoryTests.Tolerance * t, $"training estimate {lora.Activations:N0} B vs measured {t:N0} B");
        Assert.Equal(lora.Weights + lora.Gradients + lora.OptimizerState + lora.Activations + lora.Rollout + lora.Runtime, lora.Total);
    }

    [Fact]
    public void PlanCommandPrintsTheRolloutOfAGrpoRun()
    {
        var path = Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "configs", "qwen2.5-0.5b-instruct.json");
        var config = PeftSharp.Formats.HfConfig.ModelConfig.Load(path);
        var request = new PlanRequest { BatchSize = 2, SeqLength = 128, Grpo = new GrpoPlanRequest(8, 256, StepsPerGeneration: 2) };
        var plan = MemoryPlanner.Make(config, request);
        // Qwen2.5-0.5B: 24 layers, 2 KV heads of 64: K and V for 2 × 2 × 8 = 32 rows × 384 tokens in f32 = 288 MiB (plus scores and prefill).
        long cache = 2L * 24 * 32 * 384 * 2 * 64 * 4;
        Assert.Equal(288L << 20, cache);
        Assert.InRange(plan.Estimates[1].Rollout, cache, 3 * cache);   // the prefill of 32 × 128 prompt tokens adds about as much again
        // Training: 2 prompts × 8 generations × (128 + 256) tokens per micro-batch, as an SFT plan of 16 × 384.
        var sft = MemoryPlanner.Make(config, new PlanRequest { BatchSize = 16, SeqLength = 384 });
        Assert.Equal(sft.Estimates[1].Activations, plan.Estimates[1].Activations);
        var output = new StringWriter();
        PeftSharp.Cli.Commands.PlanCommand.Run(path, request, output);
        Assert.Contains("a rollout of 32 sequences per generation", output.ToString());
        Assert.Contains("rollout", output.ToString().Split('\n').First(l => l.StartsWith("method")));
    }
}
