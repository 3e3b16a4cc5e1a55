using System.Text.Json.Nodes;
using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Recipes;
using PeftSharp.Training.Rl;

namespace PeftSharp.Tests.Training.Rl;

/// <summary>GRPO through `peftsharp train`'s path on a tiny GPT-2: TRL's metrics logged, completions written, determinism and exact resume.</summary>
public sealed class GrpoRunTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-grpo").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Model()
    {
        string dir = Path.Combine(_root, "model");
        if (!Directory.Exists(dir)) ModelInitializer.Write(dir, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 5 });
        return dir;
    }

    private string Data()
    {
        string path = Path.Combine(_root, "prompts.jsonl");
        if (!File.Exists(path))
            File.WriteAllLines(path, Enumerable.Range(0, 8).Select(i => $$"""{"prompt": "What is {{i}} plus {{i + 1}}? The answer is", "answer": "{{2 * i + 1}}"}"""));
        return path;
    }

    private RunConfig Config(string name, string extraTraining = "", string grpo = "", int maxSteps = 4,
        string rewards = "  reward_funcs: [\"numeric:answer\", \"length:3\"]\n  reward_weights: [1.0, 2.0]") =>
        RunConfig.FromTree(ConfigTree.ParseYaml(ConfigYaml(name, extraTraining, rewards, grpo, maxSteps)));

    private string ConfigYaml(string name, string extraTraining, string rewards, string grpo = "", int maxSteps = 4)
    {
        var yaml = $"""
            model:
              name_or_path: "{Model()}"
            lora:
              r: 4
              lora_alpha: 8
              lora_dropout: 0.1
              target_modules: [c_attn]
            data:
              train_file: "{Data()}"
            training:
              trainer: grpo
              output_dir: "{Path.Combine(_root, name)}"
              max_steps: {maxSteps}
              per_device_train_batch_size: 2
              gradient_accumulation_steps: 2
              learning_rate: 2.0e-2
              logging_steps: 1
              seed: 3
              save_strategy: steps
              save_steps: 2
            {extraTraining}
            grpo:
              num_generations: 3
              max_completion_length: 6
              beta: 0.04
              epsilon_high: 0.28
              loss_type: grpo
            {rewards}
            {grpo}
            """;
        return yaml;
    }

    /// <summary>A generation per micro-batch (TRL's default is one per step: steps_per_generation = gradient_accumulation_steps).</summary>
    private const string Each = "  steps_per_generation: 1";

    [Fact]
    public void TrainsLogsTrlMetricsAndResumesToTheSameAdapterBytes()
    {
        var full = FineTuning.Run(Config("full", grpo: Each));
        Assert.Equal(4, full.Train.GlobalStep);
        var log = File.ReadLines(Path.Combine(full.OutputDir, "metrics.jsonl")).Select(l => (JsonObject)JsonNode.Parse(l)!).Where(l => l.ContainsKey("loss")).ToList();
        Assert.Equal(4, log.Count);
        foreach (var key in new[] { "reward", "reward_std", "frac_reward_zero_std", "rewards/numeric/mean", "rewards/length/mean", "rewards/length/std", "kl",
                     "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "completions/mean_length", "completions/clipped_ratio" })
            Assert.True(log[0].ContainsKey(key), $"metrics.jsonl lacks {key}: {log[0].ToJsonString()}");
        // The ratio is 1 with one iteration: nothing is clipped; the adapter moved, so the KL to the reference is positive later.
        Assert.All(log, l => Assert.Equal(0, (double)l["clip_ratio/region_mean"]!));
        Assert.True((double)log[^1]["kl"]! > 0, string.Join("\n", log.Select(l => l.ToJsonString())));
        var completions = File.ReadLines(Path.Combine(full.OutputDir, GrpoTuning.CompletionsFileName)).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        Assert.Equal(4 * 2 * 2 * 3, completions.Count);   // steps × micro-batches × prompts × generations
        Assert.All(completions, c => Assert.True(c.ContainsKey("prompt") && c.ContainsKey("completion") && c.ContainsKey("reward") && c.ContainsKey("length")));
        // Lengths vary in a group, so the advantages are not all 0 and the adapter trained.
        Assert.Contains(completions, c => Math.Abs((double)c["advantage"]!) > 0.1);

        Assert.Contains("[step 4, reward", File.ReadAllText(full.ReportPath!));
        string adapter = Path.Combine(full.OutputDir, "adapter_model.safetensors");
        var again = FineTuning.Run(Config("again", grpo: Each));
        Assert.Equal(full.Train.StepLosses, again.Train.StepLosses);
        Assert.Equal(File.ReadAllBytes(adapter), File.ReadAllBytes(Path.Combine(again.OutputDir, "adapter_model.safetensors")));

        string part = Path.Combine(_root, "part");
        Directory.CreateDirectory(Path.Combine(part, "checkpoint-2"));
        foreach (var f in Directory.GetFiles(Path.Combine(full.OutputDir, "checkpoint-2")))
            File.Copy(f, Path.Combine(part, "checkpoint-2", Path.GetFileName(f)));
        var resumed = FineTuning.Run(Config("part", "  resume_from_checkpoint: true", Each));
        Assert.EndsWith("checkpoint-2", resumed.Train.ResumedFrom);
        Assert.Equal(full.Train.StepLosses.Skip(2), resumed.Train.StepLosses);
        Assert.Equal(File.ReadAllBytes(adapter), File.ReadAllBytes(Path.Combine(resumed.OutputDir, "adapter_model.safetensors")));
    }

    [Fact]
    public void AResumeInTheMiddleOfAGenerationCycleTrainsOnTheBufferedRolloutsToTheSameAdapterBytes()
    {
        // One generation of all 8 prompts fills 4 micro-batches (2 steps) and is trained on twice: a cycle of 4 steps, so
        // checkpoint-2 is in the middle of it and the later steps train on rollouts of older weights (π_old ≠ π).
        const string grpo = "  steps_per_generation: 4\n  num_iterations: 2\n  epsilon: 0.02";
        const string Vowel = "  reward_funcs: [\"regex:[aeiou]\"]";   // about half the tiny model's random completions: the groups' rewards vary
        var full = FineTuning.Run(Config("buffer-full", "", grpo, 6, Vowel));
        Assert.Equal(6, full.Train.GlobalStep);
        var completions = File.ReadLines(Path.Combine(full.OutputDir, GrpoTuning.CompletionsFileName)).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        Assert.Equal(2 * 8 * 3, completions.Count);   // generations at steps 1 and 5, 8 prompts × 3 completions each
        Assert.Equal([1, 5], completions.Select(c => (int)c["step"]!).Distinct());
        Assert.True(File.Exists(Path.Combine(full.OutputDir, "checkpoint-2", GrpoObjective.RolloutsFileName)));
        var log = File.ReadLines(Path.Combine(full.OutputDir, "metrics.jsonl")).Select(l => (JsonObject)JsonNode.Parse(l)!).Where(l => l.ContainsKey("loss")).ToList();
        Assert.Contains(log, l => (double)l["clip_ratio/region_mean"]! > 0);   // tight clips: the moved weights' ratios leave [0.98, 1.03]

        string part = Path.Combine(_root, "buffer-part");
        Directory.CreateDirectory(Path.Combine(part, "checkpoint-2"));
        foreach (var f in Directory.GetFiles(Path.Combine(full.OutputDir, "checkpoint-2")))
            File.Copy(f, Path.Combine(part, "checkpoint-2", Path.GetFileName(f)));
        var resumed = FineTuning.Run(Config("buffer-part", "  resume_from_checkpoint: true", grpo, 6, Vowel));
        Assert.Equal(full.Train.StepLosses.Skip(2), resumed.Train.StepLosses);
        Assert.Equal(File.ReadAllBytes(Path.Combine(full.OutputDir, "adapter_model.safetensors")),
            File.ReadAllBytes(Path.Combine(resumed.OutputDir, "adapter_model.safetensors")));

        // Without the buffer the resume cannot continue the cycle, and says why.
        File.Delete(Path.Combine(part, "checkpoint-2", GrpoObjective.RolloutsFileName));
        foreach (var d in Directory.GetDirectories(part).Where(d => !d.EndsWith("checkpoint-2"))) Directory.Delete(d, true);
        Assert.Contains(GrpoObjective.RolloutsFileName, Assert.Throws<PeftSharpException>(() =>
            FineTuning.Run(Config("buffer-part", "  resume_from_checkpoint: true", grpo, 6, Vowel))).Message);
    }

    [Fact]
    public void HeldOutPromptsAreEvaluatedByTheirMeanRewardOnTheSameSamplingStreamEachTime()
    {
        string heldOut = Path.Combine(_root, "heldout.jsonl");
        File.WriteAllLines(heldOut, Enumerable.Range(0, 3).Select(i => $$"""{"prompt": "Name a vowel {{i}}:"}"""));
        const string vowel = "  reward_funcs: [\"regex:[aeiou]\"]";
        string training = $"  eval_strategy: steps\n  eval_steps: 2\n  eval_on_start: true\n  per_device_eval_batch_size: 2\n  metric_for_best_model: reward";
        var run = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(
            ConfigYaml("eval", training, vowel).Replace("data:\n", $"data:\n  eval_file: \"{heldOut}\"\n"))));
        var evals = File.ReadLines(Path.Combine(run.OutputDir, "metrics.jsonl")).Select(l => (JsonObject)JsonNode.Parse(l)!)
            .Where(l => l.ContainsKey("eval_reward")).ToList();
        Assert.Equal([0, 2, 4], evals.Select(e => (int)e["step"]!));
        foreach (var e in evals)
        {
            // 3 prompts × 3 samples of at most 6 tokens: the mean reward is a multiple of 1/9 and equals the regex reward's mean.
            double reward = (double)e["eval_reward"]!;
            Assert.InRange(reward, 0, 1);
            Assert.Equal(Math.Round(reward * 9), reward * 9, 6);
            Assert.Equal(reward, (double)e["eval_rewards/regex/mean"]!);
            Assert.InRange((double)e["eval_completions/mean_length"]!, 1, 6);
        }
        // The completions log holds the training rollouts only.
        Assert.DoesNotContain(File.ReadLines(Path.Combine(run.OutputDir, GrpoTuning.CompletionsFileName)), l => l.Contains("Name a vowel"));
        Assert.Contains("test_size", Assert.Throws<PeftSharpException>(() => FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(
            ConfigYaml("x", "", vowel).Replace("data:\n", "data:\n  test_size: 0.2\n"))))).Message);

        // Without metric_for_best_model (the loss, which a GRPO evaluation does not report) the run evaluates and tracks no best
        // metric, as transformers does; what needs a best metric asks for the key by name.
        var plain = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(ConfigYaml("eval-plain",
            training.Replace("\n  metric_for_best_model: reward", ""), vowel).Replace("data:\n", $"data:\n  eval_file: \"{heldOut}\"\n"))));
        Assert.Equal(evals.Select(e => (double)e["eval_reward"]!), File.ReadLines(Path.Combine(plain.OutputDir, "metrics.jsonl"))
            .Select(l => (JsonObject)JsonNode.Parse(l)!).Where(l => l.ContainsKey("eval_reward")).Select(e => (double)e["eval_reward"]!));
        Assert.Null(plain.Train.BestModelCheckpoint);
        string message = Assert.Throws<PeftSharpException>(() => FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(ConfigYaml("eval-best",
            training.Replace("\n  metric_for_best_model: reward", "\n  early_stopping_patience: 2"), vowel)
            .Replace("data:\n", $"data:\n  eval_file: \"{heldOut}\"\n"))))).Message;
        Assert.Contains("metric_for_best_model is not set", message);
        Assert.Contains("reward", message);
    }

    [Fact]
    public void UnsupportedOrWrongOptionsAreRefusedByName()
    {
        Assert.Contains("num_iterations", Assert.Throws<PeftSharpException>(() => Config("x", grpo: "  num_iterations: 0")).Message);
        Assert.Contains("steps_per_generation", Assert.Throws<PeftSharpException>(() => Config("x", grpo: "  steps_per_generation: 0")).Message);
        Assert.Contains("reward_weights", Assert.Throws<PeftSharpException>(() => Config("x", rewards: "  reward_funcs: [json, \"length:3\"]\n  reward_weights: [1.0]")).Message);
        Assert.Contains("unknown reward", Assert.Throws<PeftSharpException>(() => Config("x", rewards: "  reward_funcs: [\"bleu\"]")).Message);
        var config = Config("x", grpo: "  scale_rewards: false");
        Assert.Equal("none", config.Grpo!.ScaleRewards);
        Assert.Equal("dapo", new GrpoOptions().LossType);
        Assert.Contains("at least one reward", Assert.Throws<PeftSharpException>(() => Config("x", rewards: "")).Message);
        Assert.Contains("grpo section is for", Assert.Throws<PeftSharpException>(() => RunConfig.FromTree(ConfigTree.ParseYaml(
            $"model:\n  name_or_path: m\ndata:\n  train_file: f\ngrpo:\n  beta: 0.1"))).Message);
    }
}
