using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using PeftSharp.AI.Judging;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Recipes;
using PeftSharp.Server;
using PeftSharp.Serving;
using PeftSharp.Tests.Serving;

namespace PeftSharp.Tests.Judging;

/// <summary>
/// Judging end to end: the PeftSharp server on loopback as an OpenAI-compatible judge (through Microsoft.Extensions.AI.OpenAI), the
/// same questions asked in process, `peftsharp judge` from a config, and DPO trained on the pairs it writes.
/// </summary>
public sealed class JudgeEndToEndTests(ServingFixture fixture) : IClassFixture<ServingFixture>, IDisposable
{
    private const string Key = "judge-key-42";
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-judge-e2e").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private async Task<(OpenAiServer Server, ServingEngine Engine, string KeyVariable)> Serve()
    {
        var engine = fixture.Engine(new ServingOptions { MaxNumSeqs = 4 });
        var server = await OpenAiServer.StartAsync(engine, new ServerOptions { Port = 0, ApiKey = Key });
        string variable = "PEFTSHARP_TEST_JUDGE_KEY_" + Guid.NewGuid().ToString("N")[..8].ToUpperInvariant();
        Environment.SetEnvironmentVariable(variable, Key);
        return (server, engine, variable);
    }

    /// <summary>TRL's prompt is longer than the tiny model's 256 positions.</summary>
    private const string ShortPrompt = "Question: {prompt}\nAnswer 0: {response0}\nAnswer 1: {response1}\nThe better answer (0 or 1):";

    private const string RankPrompt = "Rank these answers to {prompt}, best first:\\n{outputs}\\nRanking:";

    private const string ScorePrompt = "Score 0-9 for {completion} as an answer to {prompt}:";

    private string Prompts(int count)
    {
        string path = Path.Combine(_root, "prompts.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, count).Select(i => $$"""{"prompt": "User likes topic {{i}}.\nRecommendation:"}"""));
        return path;
    }

    [Fact]
    public async Task AServedModelJudgesThroughTheOpenAiClientAsItDoesInProcess()
    {
        var (server, engine, variable) = await Serve();
        await using var _ = server;
        using var __ = engine;
        var options = new JudgeOptions { Name = "served", ModelId = "a", ShuffleOrder = false, PairwiseMaxTokens = 5, PairwiseTemplate = ShortPrompt };
        string cachePath = Path.Combine(_root, "cache.jsonl");
        var questions = new[] { ("Which video?", "Piano Scales Daily", "Tokyo on a Budget"), ("Pick one", "yes", "no"), ("Recommend", "a", "bb") };

        using var remote = JudgeEndpoints.OpenAi(new Uri(server.Address, "/v1").ToString(), "a", variable);
        PairVerdict[] overHttp;
        using (var cache = new JudgeCache(cachePath))
        {
            var judge = new ChatJudge(remote, options, cache);
            overHttp = await Task.WhenAll(questions.Select((q, i) => judge.JudgePairAsync(q.Item1, q.Item2, q.Item3, i)));
            Assert.Equal(3, judge.Counts.Calls);
        }
        // The same questions to the same model and adapter in process (judge type local: PeftSharpChatClient) get the same raw answers: greedy, 5 tokens.
        var settings = JudgeSettings.Read(new JsonObject
        {
            ["type"] = "local", ["model"] = fixture.Model, ["adapter"] = fixture.AdapterA, ["shuffle_order"] = false, ["max_tokens"] = 5, ["system_prompt"] = ShortPrompt,
        });
        Assert.StartsWith("local:llama+adapter-a", settings.Options.Name);
        var (localClient, local, localCache) = settings.Build();
        using (localClient)
        using (localCache)
        {
            Assert.Equal("judge", local.Options.ModelId);
            var inProcess = await Task.WhenAll(questions.Select((q, i) => local.JudgePairAsync(q.Item1, q.Item2, q.Item3, i)));
            Assert.Equal(inProcess.Select(v => v.Raw), overHttp.Select(v => v.Raw));
        }
        Assert.All(overHttp, v => Assert.False(string.IsNullOrEmpty(v.Raw)));
        // A tiny random model does not answer "0" or "1": every verdict is unparseable, none guessed.
        Assert.All(overHttp, v => Assert.Equal(v.Choice >= 0 ? JudgeOutcome.Judged : JudgeOutcome.Unparseable, v.Outcome));

        // A rerun is answered from the cache: nothing reaches the server.
        using (var cache = new JudgeCache(cachePath))
        {
            var again = new ChatJudge(remote, options, cache);
            var cached = await Task.WhenAll(questions.Select((q, i) => again.JudgePairAsync(q.Item1, q.Item2, q.Item3, i)));
            Assert.Equal(overHttp.Select(v => v.Raw), cached.Select(v => v.Raw));
            Assert.Equal(0, again.Counts.Calls);
            Assert.Equal(3, again.Counts.CacheHits);
        }

        // A question too long for the judge's context is refused by the endpoint (HTTP 400): skipped and counted, not retried.
        var longQuestion = await new ChatJudge(remote, options with { Name = "long" }).JudgePairAsync(string.Join(" ", Enumerable.Repeat("word", 400)), "x", "y");
        Assert.Equal(JudgeOutcome.Failed, longQuestion.Outcome);

        // A wrong key is not transient: the run stops with the status.
        Environment.SetEnvironmentVariable(variable, "wrong");
        using var wrong = JudgeEndpoints.OpenAi(new Uri(server.Address, "/v1").ToString(), "a", variable);
        var e = await Assert.ThrowsAsync<PeftSharpException>(() => new ChatJudge(wrong, options with { Name = "wrong" }).JudgePairAsync("p", "x", "y"));
        Assert.Contains("HTTP 401", e.Message);
    }

    [Fact]
    public async Task TheJudgeCommandSamplesJudgesOverLoopbackAndCountsWhatItSkipped()
    {
        var (server, engine, variable) = await Serve();
        await using var _ = server;
        using var __ = engine;
        string output = Path.Combine(_root, "pairs.jsonl");
        string config = Path.Combine(_root, "judge.yaml");
        File.WriteAllText(config, $"""
            policy:
              model: "{fixture.Model}"
              adapter: "{fixture.AdapterA}"
            data:
              prompts: prompts.jsonl
            generation:
              num_answers: 3
              max_new_tokens: 6
              batch_size: 2
              seed: 5
            judge:
              type: openai
              base_url: "{new Uri(server.Address, "/v1")}"
              model: tiny-llama
              api_key_env: {variable}
              max_tokens: 2
              system_prompt: "{ShortPrompt.Replace("\n", "\\n")}"
              rank_prompt: "{RankPrompt}"
              cache: judge-cache.jsonl
            output:
              path: pairs.jsonl
            """);
        Prompts(5);
        var log = new StringWriter();
        var result = JudgeCommand.Run(config, log);
        Assert.Equal(5, result.Prompts);
        Assert.Equal(15, result.Answers);
        Assert.Equal(5, result.Pairs + result.Ties + result.Unparseable + result.Failed);
        Assert.Equal(0, result.Failed);
        Assert.Equal(result.Pairs, File.ReadAllLines(output).Length);
        Assert.True(File.Exists(Path.Combine(_root, "judge-cache.jsonl")));
        Assert.Contains($"{result.Pairs} pairs written to {output}", log.ToString());
        Assert.Contains($"{result.Unparseable} unparseable", log.ToString());
        long paid = result.Counts.Calls;
        Assert.True(paid > 0);

        // The rerun samples the same answers (seeded) and pays for no judge call.
        var rerun = JudgeCommand.Run(config, new StringWriter());
        Assert.Equal(0, rerun.Counts.Calls);
        Assert.Equal(paid, rerun.Counts.CacheHits);
        Assert.Equal(result.Pairs, rerun.Pairs);

        // A misspelt key is refused by name.
        File.WriteAllText(config, File.ReadAllText(config).Replace("num_answers", "num_answer"));
        var e = Assert.Throws<PeftSharpException>(() => JudgeCommand.Run(config, new StringWriter()));
        Assert.Contains("generation: unknown key \"num_answer\"", e.Message);
        Assert.Contains("num_answers", e.Message);
    }

    [Fact]
    public void JudgedPairsAreDpoData()
    {
        // Answers sampled from the tiny policy; a judge (fake: it prefers the longer answer) ranks them; DPO trains on the pairs.
        var config = new PreferencePairsConfig
        {
            PolicyModel = fixture.Model, PromptsFile = Prompts(8), NumAnswers = 3, MaxNewTokens = 8, Seed = 2,
            Judge = new JudgeSettings { Type = "openai", Model = "fake", Options = new JudgeOptions() }, OutputPath = Path.Combine(_root, "dpo-pairs.jsonl"),
        };
        var prompts = GrpoTuning.LoadPrompts(config.PromptsFile, null, false, []);
        List<string[]> answers;
        using (var policy = ModelLoading.Load(fixture.Model)) answers = PreferencePairs.Sample(policy, fixture.Model, prompts, config);
        Assert.All(answers, a => Assert.Equal(3, a.Length));
        static string Longer(string content)
        {
            var outputs = System.Text.RegularExpressions.Regex.Matches(content, "\"output\": \"\"\"(.*?)\"\"\"", System.Text.RegularExpressions.RegexOptions.Singleline);
            return outputs[0].Groups[1].Value.Length >= outputs[1].Groups[1].Value.Length ? "0" : "1";
        }
        var judge = new ChatJudge(new FakeChatClient(Longer), new JudgeOptions { Name = "longer", ShuffleOrder = true, Seed = 1 });
        // Three answers: ranked by the rank prompt, which this fake does not answer, so rank through pairs of two distinct answers instead.
        var two = answers.Select(a => a.Take(2).ToArray()).ToList();
        var result = PreferencePairs.Judge(judge, prompts, two, config.OutputPath);
        Assert.True(result.Pairs >= 6, $"{result.Pairs} pairs");
        var lines = File.ReadAllLines(config.OutputPath).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();
        Assert.All(lines, l =>
        {
            Assert.True(l["chosen"]!.GetValue<string>().Length >= l["rejected"]!.GetValue<string>().Length);
            Assert.Equal("longer", l["judge"]!.GetValue<string>());
            Assert.Contains(l["verdict"]!.GetValue<string>(), new[] { "0", "1" });
        });
        var pairs = PreferenceData.Load(config.OutputPath, null, false, []);
        Assert.Equal(result.Pairs, pairs.Count);

        var run = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml($"""
            model:
              name_or_path: "{fixture.Model}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [q_proj, v_proj]
            data:
              train_file: "{config.OutputPath}"
            training:
              trainer: dpo
              output_dir: "{Path.Combine(_root, "dpo")}"
              max_steps: 3
              per_device_train_batch_size: 2
              learning_rate: 5.0e-3
              logging_steps: 1
              save_strategy: "no"
            """)));
        Assert.Equal(3, run.Train.GlobalStep);
        Assert.True(double.IsFinite(run.Train.TrainingLoss));
        Assert.True(File.Exists(Path.Combine(_root, "dpo", "adapter_model.safetensors")));
    }

    [Fact]
    public async Task AGrpoConfigNamesTheJudgeRewardAndPeftsharpTrainBuildsIt()
    {
        var (server, engine, variable) = await Serve();
        await using var _ = server;
        using var __ = engine;
        File.WriteAllText(Path.Combine(_root, "judge-reward.yaml"), $"""
            judge:
              type: openai
              base_url: "{new Uri(server.Address, "/v1")}"
              model: tiny-llama
              api_key_env: {variable}
              cache: reward-cache.jsonl
            reward:
              template: "{ScorePrompt}"
              min: 0
              max: 9
              max_tokens: 2
            """);
        File.WriteAllText(Path.Combine(_root, "grpo.yaml"), $"""
            model:
              name_or_path: "{fixture.Model}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [q_proj, v_proj]
            data:
              train_file: prompts.jsonl
            training:
              trainer: grpo
              output_dir: "{Path.Combine(_root, "grpo")}"
              max_steps: 1
              per_device_train_batch_size: 2
              logging_steps: 1
              save_strategy: "no"
            grpo:
              num_generations: 2
              max_completion_length: 4
              reward_funcs: ["length:3", "judge:judge-reward.yaml"]
            """);
        Prompts(4);
        var log = new StringWriter();
        string path = Path.Combine(_root, "grpo.yaml");
        var result = TrainCommand.Run(RunConfig.Load(path), log, configFolder: _root);
        Assert.Equal(1, result.Train.GlobalStep);
        var summary = System.Text.RegularExpressions.Regex.Match(log.ToString(), @"judge: (\d+) completions scored, (\d+) unparseable or failed \(NaN\)");
        Assert.True(summary.Success, log.ToString());
        Assert.Equal(4, int.Parse(summary.Groups[1].Value) + int.Parse(summary.Groups[2].Value));
        Assert.True(File.ReadAllLines(Path.Combine(_root, "reward-cache.jsonl")).Length >= 1);
        // Without the host (a program calling the library alone) the judge reward is refused by name, not ignored.
        var e = Assert.Throws<PeftSharpException>(() => FineTuning.Run(RunConfig.Load(path)));
        Assert.Contains("built by the host", e.Message);
    }

    [Fact]
    public void PromptsComeFromADatasetSplitAndTheJudgeRunsInProcess()
    {
        string dataset = Path.Combine(_root, "prompts-dataset");
        Directory.CreateDirectory(dataset);
        File.WriteAllLines(Path.Combine(dataset, "train.jsonl"), Enumerable.Range(0, 5).Select(i => $$"""{"prompt": "train {{i}}"}"""));
        File.WriteAllLines(Path.Combine(dataset, "test.jsonl"), Enumerable.Range(0, 3).Select(i => $$"""{"prompt": [{"role": "user", "content": "test {{i}}"}]}"""));
        string config = Path.Combine(_root, "local-judge.json");
        File.WriteAllText(config, new JsonObject
        {
            ["policy"] = new JsonObject { ["model"] = fixture.Model },
            ["data"] = new JsonObject { ["dataset_name"] = "prompts-dataset", ["split"] = "test" },
            ["generation"] = new JsonObject { ["num_answers"] = 2, ["max_new_tokens"] = 4 },
            ["judge"] = new JsonObject { ["type"] = "local", ["model"] = fixture.Model, ["adapter"] = fixture.AdapterB, ["system_prompt"] = ShortPrompt, ["max_tokens"] = 1 },
            ["output"] = new JsonObject { ["path"] = "local-pairs.jsonl" },
        }.ToJsonString());
        var result = JudgeCommand.Run(config, new StringWriter());
        Assert.Equal(3, result.Prompts);
        Assert.Equal(3, result.Pairs + result.Ties + result.Unparseable + result.Failed);
        // Conversational prompts give conversational pairs.
        foreach (var line in File.ReadAllLines(Path.Combine(_root, "local-pairs.jsonl")))
            Assert.Equal("assistant", JsonNode.Parse(line)!["chosen"]![0]!["role"]!.GetValue<string>());

        File.WriteAllText(config, File.ReadAllText(config).Replace("\"test\"", "\"tset\""));
        var e = Assert.Throws<PeftSharpException>(() => JudgeCommand.Run(config, new StringWriter()));
        Assert.Contains("no split \"tset\"", e.Message);
    }
}
