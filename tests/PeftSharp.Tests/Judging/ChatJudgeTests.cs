using System.Net;
using PeftSharp.AI.Judging;
using PeftSharp.Training.Rl;

namespace PeftSharp.Tests.Judging;

/// <summary>The judges against a fake IChatClient: TRL's prompt and parse, shuffling, ties, malformed answers, retries, timeouts, the concurrency bound and the cache.</summary>
public sealed class ChatJudgeTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-judge").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private static JudgeOptions Fast(bool shuffle = false) => new() { Name = "fake", ShuffleOrder = shuffle, Backoff = TimeSpan.FromMilliseconds(1), Timeout = TimeSpan.FromSeconds(10) };

    /// <summary>Answers with the identifier of the output that contains "GOOD" (a judge that reads, not one that picks a position).</summary>
    private static string PickGood(string content)
    {
        int good = content.IndexOf("GOOD", StringComparison.Ordinal);
        int at0 = content.IndexOf("\"model_identifier\": \"0\"", StringComparison.Ordinal), at1 = content.IndexOf("\"model_identifier\": \"1\"", StringComparison.Ordinal);
        return good > at1 ? "1" : good > at0 ? "0" : "?";
    }

    [Fact]
    public void ThePairwisePromptIsTrlsWithTheFieldsFilledIn()
    {
        string text = JudgePrompts.Format(JudgePrompts.Pairwise, new Dictionary<string, string> { ["prompt"] = "P?", ["response0"] = "A!", ["response1"] = "B." }, "t");
        Assert.StartsWith("I require a leaderboard for various large language models.", text);
        Assert.Contains("{\n    \"instruction\": \"\"\"P?\"\"\",\n}", text);
        Assert.Contains("{\n    {\n        \"model_identifier\": \"0\",\n        \"output\": \"\"\"A!\"\"\"\n    },\n    {\n        \"model_identifier\": \"1\",\n        \"output\": \"\"\"B.\"\"\"\n    }\n}", text);
        Assert.EndsWith("(no quotation marks, no spaces, no new lines, ...).\n", text);
        Assert.DoesNotContain("{{", text);
        var e = Assert.Throws<PeftSharpException>(() => JudgePrompts.Check("Which? {response0} {answer1}", ["prompt", "response0", "response1"], [], "judge.system_prompt"));
        Assert.Contains("unknown field {answer1}", e.Message);
        Assert.Throws<PeftSharpException>(() => JudgePrompts.Check("{prompt} {response0}", ["prompt", "response0", "response1"], ["response0", "response1"], "judge.system_prompt"));
    }

    [Theory]
    [InlineData("0", 0)]
    [InlineData("1", 1)]
    [InlineData(" 1\n", 1)]
    [InlineData("2", -1)]
    [InlineData("01", -1)]
    [InlineData("The first", -1)]
    [InlineData("", -1)]
    public void PairwiseAnswersParseAsTrlsOrMinusOne(string raw, int expected) => Assert.Equal(expected, JudgePrompts.ParsePairwise(raw));

    [Fact]
    public void RankingsAndScoresParseStrictly()
    {
        Assert.Equal([2, 0, 1], JudgePrompts.ParseRanking("2,0,1", 3)!);
        Assert.Equal([1, 0, 2], JudgePrompts.ParseRanking(" 1, 0 , 2\n", 3)!);
        Assert.Null(JudgePrompts.ParseRanking("2,2,1", 3));
        Assert.Null(JudgePrompts.ParseRanking("2,0", 3));
        Assert.Null(JudgePrompts.ParseRanking("2,0,3", 3));
        Assert.Equal(7, JudgePrompts.ParseScore("7", 0, 10));
        Assert.Equal(3.5, JudgePrompts.ParseScore("Score: 3.5/10", 0, 10));
        Assert.True(double.IsNaN(JudgePrompts.ParseScore("11", 0, 10)));
        Assert.True(double.IsNaN(JudgePrompts.ParseScore("seven", 0, 10)));
        Assert.True(double.IsNaN(JudgePrompts.ParseScore("7 or 8", 0, 10)));
    }

    [Fact]
    public void ShuffledOrderIsMappedBackToTheAnswersAsGiven()
    {
        var client = new FakeChatClient(PickGood);
        var judge = new ChatJudge(client, Fast(shuffle: true) with { Seed = 9 });
        var prompts = Enumerable.Range(0, 40).Select(i => $"prompt {i}").ToList();
        var pairs = prompts.Select((_, i) => i % 2 == 0 ? ($"GOOD {i}", $"bad {i}") : ($"bad {i}", $"GOOD {i}")).ToList();
        var verdicts = judge.Judge(prompts, pairs);
        Assert.Equal(prompts.Select((_, i) => i % 2), verdicts);
        // Both orders were shown: with a position-picking judge the verdicts would follow the coin.
        var first = new ChatJudge(new FakeChatClient(_ => "0"), Fast(shuffle: true) with { Seed = 9 }).Judge(prompts, pairs);
        Assert.Contains(0, first);
        Assert.Contains(1, first);
    }

    [Fact]
    public async Task MalformedAnswersAreSkippedAndCountedNeverGuessed()
    {
        var judge = new ChatJudge(new FakeChatClient(_ => "Output 0 is better"), Fast());
        var v = await judge.JudgePairAsync("p", "a", "b");
        Assert.Equal(-1, v.Choice);
        Assert.Equal(JudgeOutcome.Unparseable, v.Outcome);
        Assert.Equal("Output 0 is better", v.Raw);
        Assert.Equal(1, judge.Counts.Unparseable);
        var rank = await new ChatJudge(new FakeChatClient(_ => "0,0,1"), Fast()).RankAsync("p", ["a", "b", "c"]);
        Assert.Null(rank.Ranking);
        Assert.Equal(JudgeOutcome.Unparseable, rank.Outcome);
    }

    [Fact]
    public async Task IdenticalAnswersAndOrderFlippingVerdictsAreTies()
    {
        var client = new FakeChatClient(_ => "0");
        var judge = new ChatJudge(client, Fast() with { BothOrders = true });
        var same = await judge.JudgePairAsync("p", "same answer", " same answer\n");
        Assert.Equal(JudgeOutcome.Tie, same.Outcome);
        Assert.Equal(0, client.Calls);
        // A judge that always answers "0" picks a position, not an answer: asked both ways it disagrees with itself.
        var biased = await judge.JudgePairAsync("p", "a", "b");
        Assert.Equal(JudgeOutcome.Tie, biased.Outcome);
        Assert.Equal(-1, biased.Choice);
        Assert.Equal(2, client.Calls);
        Assert.Equal(2, judge.Counts.Ties);
        var consistent = await new ChatJudge(new FakeChatClient(PickGood), Fast() with { BothOrders = true }).JudgePairAsync("p", "bad", "GOOD");
        Assert.Equal(1, consistent.Choice);
        // Ranks: duplicates follow the text they share; one distinct answer is a tie.
        var rank = await new ChatJudge(new FakeChatClient(PickGood), Fast()).RankAsync("p", ["bad", "GOOD", "bad"]);
        Assert.Equal([1, 0, 2], rank.Ranking!);
        var all = await judge.RankAsync("p", ["x", "x", "x "]);
        Assert.Equal(JudgeOutcome.Tie, all.Outcome);
    }

    [Fact]
    public async Task RanksOfMoreThanTwoUseTheRankPromptShuffledAndMappedBack()
    {
        // The judge ranks outputs by the number in them, highest first.
        static string ByNumber(string content)
        {
            var outputs = System.Text.RegularExpressions.Regex.Matches(content, "\"model_identifier\": \"(\\d)\",\\s*\"output\": \"\"\"answer (\\d)\"\"\"");
            return string.Join(",", outputs.OrderByDescending(m => m.Groups[2].Value).Select(m => m.Groups[1].Value));
        }
        var judge = new ChatJudge(new FakeChatClient(ByNumber), Fast(shuffle: true));
        for (int i = 0; i < 6; i++)
        {
            var v = await judge.RankAsync("p", ["answer 3", "answer 7", "answer 1", "answer 5"], i);
            Assert.Equal([1, 3, 0, 2], v.Ranking!);
        }
    }

    /// <summary>A pairwise judge that prefers the output with the higher number ("answer 7" over "answer 3"), reading both outputs.</summary>
    private static string HigherNumber(string content)
    {
        var n = System.Text.RegularExpressions.Regex.Matches(content, "\"output\": \"\"\"answer (\\d)\"\"\"").Select(m => m.Groups[1].Value).ToArray();
        Assert.Equal(2, n.Length);
        return string.CompareOrdinal(n[0], n[1]) > 0 ? "0" : "1";
    }

    [Fact]
    public async Task ARoundRobinRanksByWinsMinusLossesThroughThePairwisePromptAlone()
    {
        // Four distinct answers (one duplicated), both orders: 6 pairs x 2 = 12 pairwise calls, no rank prompt.
        var client = new FakeChatClient(HigherNumber);
        var judge = new ChatJudge(client, Fast(shuffle: true) with { BothOrders = true, Ranking = JudgeOptions.RankByRoundRobin });
        var v = await judge.RankAsync("p", ["answer 3", "answer 7", "answer 1", "answer 5", "answer 7"], 4);
        Assert.Equal(JudgeOutcome.Judged, v.Outcome);
        Assert.Equal([1, 4, 3, 0, 2], v.Ranking!);
        Assert.Equal(12, client.Calls);
        Assert.EndsWith("scores 0=-1,1=3,2=-3,3=1", v.Raw);
        Assert.Contains("0v1:1 | 0", v.Raw);
        // Without both orders each pair is asked once, in the shuffled order, and mapped back.
        var once = new FakeChatClient(HigherNumber);
        var single = await new ChatJudge(once, Fast(shuffle: true) with { Ranking = JudgeOptions.RankByRoundRobin }).RankAsync("p", ["answer 2", "answer 9", "answer 4"], 1);
        Assert.Equal([1, 2, 0], single.Ranking!);
        Assert.Equal(3, once.Calls);
    }

    [Fact]
    public async Task ARoundRobinWithoutAClearBestAndWorstIsATieAndAMissingVerdictIsNeverGuessed()
    {
        var options = Fast() with { BothOrders = true, Ranking = JudgeOptions.RankByRoundRobin };
        // A judge that picks a position draws every game: no pair.
        var biased = new ChatJudge(new FakeChatClient(_ => "0"), options);
        var v = await biased.RankAsync("p", ["answer 1", "answer 2", "answer 3"]);
        Assert.Equal(JudgeOutcome.Tie, v.Outcome);
        Assert.Null(v.Ranking);
        Assert.Equal(6, biased.Counts.Calls);
        // A cycle (1 beats 2, 2 beats 3, 3 beats 1): every score is 0.
        static string Cycle(string content)
        {
            var n = System.Text.RegularExpressions.Regex.Matches(content, "answer (\\d)").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
            return (n[1] == n[0] % 3 + 1) ? "0" : "1";
        }
        var cycle = await new ChatJudge(new FakeChatClient(Cycle), options).RankAsync("p", ["answer 1", "answer 2", "answer 3"]);
        Assert.Equal(JudgeOutcome.Tie, cycle.Outcome);
        Assert.EndsWith("scores 0=0,1=0,2=0", cycle.Raw);
        // Scores tie in the order given; the best by score must have beaten the worst itself. Games: 4 beats 1 and 2, 3 beats 4, the
        // rest draw, so 4 and 3 score 1, 1 and 2 score -1, and 4 (first) beat 2 (last): a pair. Then 1 beats 3, 2 and 3 beat 4, 1 and 4
        // draw: 1 scores 1, 2 scores 1, 3 scores 0, 4 scores -2, but 1 never beat 4: a tie.
        static Func<string, string> Games(params (int Winner, int Loser)[] games) => content =>
        {
            var n = System.Text.RegularExpressions.Regex.Matches(content, "answer (\\d)").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
            return games.Contains((n[0], n[1])) ? "0" : games.Contains((n[1], n[0])) ? "1" : "0";
        };
        var upset = await new ChatJudge(new FakeChatClient(Games((4, 1), (4, 2), (3, 4))), options).RankAsync("p", ["answer 4", "answer 1", "answer 2", "answer 3"]);
        Assert.Equal(JudgeOutcome.Judged, upset.Outcome);
        Assert.Equal([0, 3, 1, 2], upset.Ranking!);
        var unbeaten = await new ChatJudge(new FakeChatClient(Games((1, 3), (2, 4), (3, 4))), options).RankAsync("p", ["answer 1", "answer 2", "answer 3", "answer 4"]);
        Assert.Equal(JudgeOutcome.Tie, unbeaten.Outcome);
        Assert.EndsWith("scores 0=1,1=1,2=0,3=-2", unbeaten.Raw);
        // worst_lost_all: the upset's worst (2) lost to 4 but drew with 1 and 3, so it is no clear loser; the strict order's is.
        var strict = options with { WorstLostAll = true };
        Assert.Equal(JudgeOutcome.Tie, (await new ChatJudge(new FakeChatClient(Games((4, 1), (4, 2), (3, 4))), strict).RankAsync("p", ["answer 4", "answer 1", "answer 2", "answer 3"])).Outcome);
        var clear = await new ChatJudge(new FakeChatClient(HigherNumber), strict).RankAsync("p", ["answer 3", "answer 7", "answer 1", "answer 5"]);
        Assert.Equal([1, 3, 0, 2], clear.Ranking!);
        var notRoundRobin = Assert.Throws<PeftSharpException>(() => JudgeSettings.Read(new System.Text.Json.Nodes.JsonObject { ["type"] = "openai", ["model"] = "m", ["worst_lost_all"] = true }));
        Assert.Contains("judge.worst_lost_all is for judge.ranking: round_robin, but judge.ranking is prompt", notRoundRobin.Message);
        var missing = await new ChatJudge(new FakeChatClient(c => c.Contains("answer 2") && c.Contains("answer 3") ? "maybe" : HigherNumber(c)), options)
            .RankAsync("p", ["answer 1", "answer 2", "answer 3"]);
        Assert.Equal(JudgeOutcome.Unparseable, missing.Outcome);
        Assert.Null(missing.Ranking);
        var e = Assert.Throws<PeftSharpException>(() => JudgeSettings.Read(new System.Text.Json.Nodes.JsonObject { ["type"] = "openai", ["model"] = "m", ["ranking"] = "elo" }));
        Assert.Contains("judge.ranking must be prompt or round_robin or score, got 'elo'", e.Message);
    }

    [Fact]
    public async Task ScoreRankingAsksEachDistinctAnswerAloneAndNeverGuessesAMissingScore()
    {
        var options = Fast() with { Ranking = JudgeOptions.RankByScore, ScoreTemplate = "Request: {prompt}\nAnswer:{completion}\nScore?", ScoreMin = 0, ScoreMax = 1 };
        var asked = new System.Collections.Concurrent.ConcurrentBag<string>();
        // A pointwise judge: 1 for an answer with GOOD in it, 0 otherwise.
        string Grade(string content)
        {
            asked.Add(content);
            return content.Contains("GOOD", StringComparison.Ordinal) ? "1" : "0";
        }
        var judge = new ChatJudge(new FakeChatClient(Grade), options);
        var v = await judge.RankAsync("p", ["bad a", "GOOD b", "bad a", "bad c"]);
        Assert.Equal(JudgeOutcome.Judged, v.Outcome);
        // One call per distinct answer, the template filled in; equal scores keep the order given, duplicates follow their text.
        Assert.Equal(3, judge.Counts.Calls);
        Assert.Contains("Request: p\nAnswer:GOOD b\nScore?", asked);
        Assert.Equal([1, 0, 2, 3], v.Ranking!);
        Assert.Equal("0:0; 1:1; 3:0", v.Raw);
        // Two answers are scored too (not asked as a pair); equal scores are a tie.
        var two = await judge.RankAsync("q", ["bad", "GOOD"]);
        Assert.Equal([1, 0], two.Ranking!);
        var tie = await judge.RankAsync("r", ["bad 1", "bad 2", "bad 3"]);
        Assert.Equal(JudgeOutcome.Tie, tie.Outcome);
        Assert.Null(tie.Ranking);
        // A score outside [score_min, score_max] or not a number makes the prompt unparseable; a failed call makes it failed.
        var unsure = await new ChatJudge(new FakeChatClient(c => c.Contains("maybe") ? "2" : Grade(c)), options).RankAsync("p", ["GOOD", "maybe", "bad"]);
        Assert.Equal(JudgeOutcome.Unparseable, unsure.Outcome);
        var down = new FakeChatClient((c, _, _) => c.Contains("bad") ? throw new HttpRequestException("refused") : Task.FromResult("1"));
        Assert.Equal(JudgeOutcome.Failed, (await new ChatJudge(down, options with { MaxRetries = 0 }).RankAsync("p", ["GOOD", "bad"])).Outcome);
        // The settings: the score keys belong to ranking score, and a bad range is refused by name.
        var settings = JudgeSettings.Read(new System.Text.Json.Nodes.JsonObject { ["type"] = "openai", ["model"] = "m", ["ranking"] = "score",
            ["score_prompt"] = "{prompt}|{completion}", ["score_max"] = 1 });
        Assert.Equal((0.0, 1.0, 8, "{prompt}|{completion}"), (settings.Options.ScoreMin, settings.Options.ScoreMax, settings.Options.ScoreMaxTokens, settings.Options.ScoreTemplate));
        Assert.Contains("judge.score_prompt is for judge.ranking: score, but judge.ranking is round_robin", Assert.Throws<PeftSharpException>(() => JudgeSettings.Read(
            new System.Text.Json.Nodes.JsonObject { ["type"] = "openai", ["model"] = "m", ["ranking"] = "round_robin", ["score_prompt"] = "{completion}" })).Message);
        Assert.Contains("judge.score_min (1) must be below judge.score_max (1)", Assert.Throws<PeftSharpException>(() => JudgeSettings.Read(
            new System.Text.Json.Nodes.JsonObject { ["type"] = "openai", ["model"] = "m", ["ranking"] = "score", ["score_min"] = 1, ["score_max"] = 1 })).Message);
        Assert.Contains("unknown field {answer}", Assert.Throws<PeftSharpException>(() => JudgeSettings.Read(
            new System.Text.Json.Nodes.JsonObject { ["type"] = "openai", ["model"] = "m", ["ranking"] = "score", ["score_prompt"] = "{answer} {completion}" })).Message);
    }

    [Fact]
    public async Task TransientFailuresAreRetriedWithBackoffAndOthersStopTheRun()
    {
        var flaky = new FakeChatClient((_, call, _) => call switch
        {
            1 => throw new HttpRequestException("busy", null, HttpStatusCode.ServiceUnavailable),
            2 => throw new HttpRequestException("slow down", null, HttpStatusCode.TooManyRequests),
            _ => Task.FromResult("1"),
        });
        var judge = new ChatJudge(flaky, Fast());
        var v = await judge.JudgePairAsync("p", "a", "b");
        Assert.Equal(1, v.Choice);
        Assert.Equal(3, flaky.Calls);
        Assert.Equal(2, judge.Counts.Retries);

        var down = new FakeChatClient((_, _, _) => throw new HttpRequestException("refused"));
        var gaveUp = new ChatJudge(down, Fast() with { MaxRetries = 2 });
        var none = await gaveUp.JudgePairAsync("p", "a", "b");
        Assert.Equal(JudgeOutcome.Failed, none.Outcome);
        Assert.Equal(3, down.Calls);
        Assert.Equal(1, gaveUp.Counts.Failed);

        var badKey = new FakeChatClient((_, _, _) => throw new HttpRequestException("unauthorized", null, HttpStatusCode.Unauthorized));
        var e = await Assert.ThrowsAsync<PeftSharpException>(() => new ChatJudge(badKey, Fast()).JudgePairAsync("p", "a", "b"));
        Assert.Contains("HTTP 401", e.Message);
        Assert.Equal(1, badKey.Calls);
    }

    [Fact]
    public async Task ACallPastItsTimeoutIsAbandonedAndRetriedEvenIfTheClientIgnoresCancellation()
    {
        var hang = new TaskCompletionSource<string>();
        var client = new FakeChatClient((_, call, _) => call == 1 ? hang.Task : Task.FromResult("0"));
        var judge = new ChatJudge(client, Fast() with { Timeout = TimeSpan.FromMilliseconds(200) });
        var started = DateTime.UtcNow;
        var v = await judge.JudgePairAsync("p", "a", "b");
        Assert.Equal(0, v.Choice);
        Assert.Equal(2, client.Calls);
        Assert.Equal(1, judge.Counts.Retries);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task NoMoreCallsThanMaxConcurrencyAreInFlight()
    {
        var client = new FakeChatClient(async (_, _, token) => { await Task.Delay(30, token); return "0"; });
        var judge = new ChatJudge(client, Fast() with { MaxConcurrency = 3 });
        await Task.WhenAll(Enumerable.Range(0, 24).Select(i => judge.JudgePairAsync($"p{i}", "a", "b", i)));
        Assert.Equal(24, client.Calls);
        Assert.Equal(3, client.MaxInFlight);
    }

    [Fact]
    public async Task ARerunHitsTheCacheAndPaysNothing()
    {
        string path = Path.Combine(_root, "cache.jsonl");
        var prompts = Enumerable.Range(0, 10).Select(i => $"p{i}").ToList();
        async Task<(List<int>, FakeChatClient, ChatJudge)> Run(string judgeName)
        {
            var client = new FakeChatClient(PickGood);
            using var cache = new JudgeCache(path);
            var judge = new ChatJudge(client, Fast(shuffle: true) with { Name = judgeName, Seed = 4 }, cache);
            var v = await Task.WhenAll(prompts.Select((p, i) => judge.JudgePairAsync(p, i % 3 == 0 ? "GOOD" : "bad", i % 3 == 0 ? "bad" : "GOOD", i)));
            return (v.Select(x => x.Choice).ToList(), client, judge);
        }
        var (first, client1, _) = await Run("fake");
        Assert.Equal(10, client1.Calls);
        var (again, client2, judge2) = await Run("fake");
        Assert.Equal(first, again);
        Assert.Equal(0, client2.Calls);
        Assert.Equal(10, judge2.Counts.CacheHits);
        // Another judge is another key.
        var (_, client3, _) = await Run("other");
        Assert.Equal(10, client3.Calls);
        // A line cut short by a crash is ignored.
        File.AppendAllText(path, "{\"key\": \"abc\", \"ra");
        using var torn = new JudgeCache(path);
        Assert.Equal(20, torn.Count);
        Assert.Equal(1, torn.Torn);
    }

    [Fact]
    public void TheJudgeRewardScoresEachCompletionAndCountsUnparseableAsNaN()
    {
        var client = new FakeChatClient(content => content.Contains("alpha") ? "7" : content.Contains("beta") ? "Score: 3/10" : content.Contains("gamma") ? "eleven" : "42");
        var log = new StringWriter();
        var reward = new JudgeReward("judge", new ChatJudge(client, Fast()), log: log);
        var inputs = new[] { "alpha", "beta", "gamma", "delta" }.Select(c => new RewardInput("Say a word", c, 1, [])).ToList();
        var scores = reward.Score(inputs);
        Assert.Equal(7, scores[0]);
        Assert.Equal(3, scores[1]);
        Assert.True(double.IsNaN(scores[2]));
        Assert.True(double.IsNaN(scores[3]));
        Assert.Equal(2, reward.Unparseable);
        Assert.Equal(2, reward.Scored);
        Assert.Contains("the judge answered \"eleven\"", log.ToString());
        Assert.All(client.Options, o => Assert.Equal(8, o!.MaxOutputTokens));
        var e = Assert.Throws<PeftSharpException>(() => new JudgeReward("judge", new ChatJudge(client, Fast()), template: "Rate {prompt}"));
        Assert.Contains("never uses {completion}", e.Message);
    }

    [Fact]
    public void GrpoConfigsNameTheJudgeRewardAndOnlyAHostBuildsIt()
    {
        var built = Rewards.Parse(["json", "judge:judge.yaml"], host: spec => Rewards.FromFunc(spec.Name + "|" + spec.Argument, _ => 1));
        Assert.Equal(["json", "judge|judge.yaml"], built.Select(r => r.Name));
        var e = Assert.Throws<PeftSharpException>(() => Rewards.Parse(["judge:judge.yaml"]));
        Assert.Contains("built by the host", e.Message);
        Assert.Throws<PeftSharpException>(() => Rewards.Parse(["judge"], host: spec => Rewards.FromFunc(spec.Name, _ => 1)));
    }
}
