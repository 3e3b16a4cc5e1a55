using System.Text.Json.Nodes;
using PeftSharp.Config;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Models.Init;
using PeftSharp.Recipes;
using PeftSharp.Training.Rl;

namespace PeftSharp.Tests.Training.Rl;

/// <summary>
/// grpo.reward_funcs: reward_model:PATH: a reward model trained here (training.trainer: reward, which learns to prefer
/// " video N on topic T" over " cats N!!") scores GRPO's completions with the values `peftsharp score` gives prompt + completion.
/// </summary>
public sealed class RewardModelRewardTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-grpo-rm").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Model()
    {
        string dir = Path.Combine(_root, "model");
        if (!Directory.Exists(dir)) ModelInitializer.Write(dir, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 5 });
        return dir;
    }

    private string TrainRewardModel()
    {
        string pairs = Path.Combine(_root, "pairs.jsonl");
        File.WriteAllLines(pairs, Enumerable.Range(0, 24).Select(i =>
            $$"""{"prompt": "I like topic {{i % 5}}. Suggest:", "chosen": " video {{i}} on topic {{i % 5}}", "rejected": " cats {{i}}!!"}"""));
        var yaml = $"""
            model:
              name_or_path: "{Model()}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [c_attn]
            data:
              train_file: "{pairs}"
            training:
              trainer: reward
              output_dir: "{Path.Combine(_root, "rm")}"
              max_steps: 6
              per_device_train_batch_size: 4
              learning_rate: 5.0e-3
              seed: 3
              save_strategy: "no"
            """;
        return FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml))).OutputDir;
    }

    /// <summary>`peftsharp score` of prompt + completion records.</summary>
    private double[] CliScores(string adapter, IEnumerable<(string Prompt, string Completion)> items)
    {
        string file = Path.Combine(_root, $"score-{Guid.NewGuid():N}.jsonl");
        File.WriteAllLines(file, items.Select(x => new JsonObject { ["prompt"] = x.Prompt, ["completion"] = x.Completion }.ToJsonString()));
        var output = new StringWriter();
        PeftSharp.Cli.Commands.ScoreCommand.Run(Model(), adapter, file, output);
        return output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => (double)JsonNode.Parse(l)!["reward"]!).ToArray();
    }

    [Fact]
    public void ATrainedRewardModelScoresCompletionsInGrpoAsTheScoreCommandDoes()
    {
        string adapter = TrainRewardModel();
        var reward = (RewardModelReward)Rewards.Parse([$"reward_model:{adapter}"])[0];
        Assert.Equal("reward_model", reward.Name);
        const string prompt = "I like topic 3. Suggest:";
        string[] completions = [" video 40 on topic 3", " cats 40!!", " video 41 on topic 3", " cats 41!!"];
        var row = new JsonObject { ["prompt"] = prompt };
        double[] scores;
        using (reward)
            scores = reward.Score([.. completions.Select(c => new RewardInput(prompt, c, 5, row))]);
        // The values are the reward model's (the adapter folder's base from its adapter_config.json), and it prefers the videos it was trained to.
        Assert.Equal(CliScores(adapter, completions.Select(c => (prompt, c))), scores);
        Assert.True(scores[0] > scores[1] && scores[2] > scores[3], string.Join(", ", scores));

        // A conversational prompt: its messages and the completion as the assistant's, rendered with the reward model's chat template.
        var messages = new JsonObject { ["prompt"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt }) };
        using var chat = (RewardModelReward)Rewards.Parse([$"reward_model:{adapter}"])[0];
        var input = new RewardInput("(rendered with the policy's template)", completions[0], 5, messages);
        string text = ChatTemplate.Builtin("chatml").Render([new ChatMessage("user", prompt), new ChatMessage("assistant", completions[0])], false);
        Assert.Equal(text, chat.Text(input));
        string textFile = Path.Combine(_root, "chat.jsonl");
        File.WriteAllText(textFile, new JsonObject { ["text"] = text }.ToJsonString() + "\n");
        var cli = new StringWriter();
        PeftSharp.Cli.Commands.ScoreCommand.Run(Model(), adapter, textFile, cli);
        Assert.Equal((double)JsonNode.Parse(cli.ToString())!["reward"]!, chat.Score([input])[0]);

        // In a GRPO run every sampled completion's reward is the reward model's score of its prompt + completion.
        string prompts = Path.Combine(_root, "prompts.jsonl");
        File.WriteAllLines(prompts, Enumerable.Range(0, 4).Select(i => $$"""{"prompt": "I like topic {{i}}. Suggest:"}"""));
        var yaml = $"""
            model:
              name_or_path: "{Model()}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [c_attn]
            data:
              train_file: "{prompts}"
            training:
              trainer: grpo
              output_dir: "{Path.Combine(_root, "grpo")}"
              max_steps: 2
              per_device_train_batch_size: 2
              learning_rate: 1.0e-2
              seed: 3
              save_strategy: "no"
            grpo:
              num_generations: 3
              max_completion_length: 5
              reward_funcs: ["reward_model:{adapter}"]
            """;
        var run = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml)));
        var logged = File.ReadLines(Path.Combine(run.OutputDir, GrpoTuning.CompletionsFileName)).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        Assert.Equal(2 * 2 * 3, logged.Count);
        var expected = CliScores(adapter, logged.Select(l => ((string)l["prompt"]!, (string)l["completion"]!)));
        for (int i = 0; i < logged.Count; i++)
        {
            Assert.Equal(expected[i], (double)logged[i]["reward_model"]!, 6);
            Assert.Equal(expected[i], (double)logged[i]["reward"]!, 6);
        }
        Assert.True(expected.Distinct().Count() > 1);
    }

    [Fact]
    public void AMissingRewardModelIsNamedWhenItLoads()
    {
        var reward = Rewards.Parse(["reward_model:" + Path.Combine(_root, "nowhere")])[0];
        var e = Assert.ThrowsAny<PeftSharpException>(() => reward.Score([new RewardInput("p", "c", 1, new JsonObject { ["prompt"] = "p" })]));
        Assert.Contains("reward_model:", e.Message);
        Assert.Contains("path", Assert.Throws<PeftSharpException>(() => Rewards.Parse(["reward_model"])).Message);
    }
}
