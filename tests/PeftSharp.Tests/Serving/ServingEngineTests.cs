using PeftSharp.Cli;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Serving;

namespace PeftSharp.Tests.Serving;

public sealed class ServingEngineTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    private static GenerationOptions Greedy(ServingEngine engine, int maxNew, IReadOnlyList<string>? stop = null) =>
        engine.ResolveOptions(new GenerationSettings { Temperature = 0, MaxNewTokens = maxNew, Seed = 1, Stop = stop });

    [Fact]
    public void TwoDecodingSessionsOnOneModelRunOnTwoThreadsAtOnce()
    {
        using var model = ModelLoading.Load(fixture.Model);
        int[][] prompts = [[5, 17, 42, 8, 3, 77, 12, 9], [9, 31, 2]];
        var expected = prompts.Select(p => Generator.GenerateGreedy(model, p, 24, [])).ToArray();
        for (int round = 0; round < 3; round++)
        {
            var results = new int[2][];
            var threads = Enumerable.Range(0, 2).Select(i => new Thread(() =>
            {
                for (int k = 0; k < 4; k++) results[i] = Generator.GenerateGreedy(model, prompts[i], 24, []);
            })).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
            Assert.Equal(expected[0], results[0]);
            Assert.Equal(expected[1], results[1]);
        }
    }

    /// <summary>Rows joining at different times, each at its own length and with its own adapter, give what each gives alone.</summary>
    [Fact]
    public void RowsWithTheirOwnLengthsAndAdaptersMatchDecodingAlone()
    {
        using var model = ModelLoading.Load(fixture.Model);
        using var peft = PeftSharp.Peft.PeftModel.WithoutAdapters(model);
        peft.LoadAdapter(fixture.AdapterA, "a");
        peft.LoadAdapter(fixture.AdapterB, "b");
        int vocab = model.Config.VocabSize;
        int[][] prompts = [[5, 17, 42, 8, 3], [9, 31, 2], [7, 7, 1, 40, 41, 42, 43]];
        string?[] adapters = ["a", null, "b"];
        int steps = 6;
        // Alone: the active-adapter path, one sequence per session.
        var alone = new List<float[]>[3];
        for (int i = 0; i < 3; i++)
        {
            if (adapters[i] is { } name) { peft.AdaptersDisabled = false; peft.SetAdapter(name); }
            else peft.AdaptersDisabled = true;
            alone[i] = [];
            using var s = model.StartDecoding(1, 32);
            var logits = new float[vocab];
            s.Append(prompts[i], [], prompts[i].Length, logits);
            alone[i].Add((float[])logits.Clone());
            for (int k = 0; k < steps; k++)
            {
                s.Append([LogitsProcessing.ArgMax(logits)], [], 1, logits);
                alone[i].Add((float[])logits.Clone());
            }
        }
        peft.AdaptersDisabled = false;
        // Together: row 1 joins first, row 0 after two steps, row 2 after three; each step decodes every running row.
        using var session = (IBatchDecodeSession)model.StartDecoding(3, 32);
        var last = new float[3][];
        var seen = new int[3];
        int[] joinAt = [2, 0, 3];
        for (int step = 0; step < steps + 4; step++)
        {
            for (int i = 0; i < 3; i++)
                if (joinAt[i] == step)
                {
                    var logits = new float[vocab];
                    session.AppendRows([i], prompts[i], prompts[i].Length, [adapters[i]], logits);
                    AssertClose(alone[i][0], logits);
                    last[i] = logits;
                    seen[i] = 1;
                }
            var rows = Enumerable.Range(0, 3).Where(i => last[i] != null && seen[i] <= steps).ToArray();
            if (rows.Length == 0) continue;
            var tokens = rows.Select(i => LogitsProcessing.ArgMax(last[i])).ToArray();
            var all = new float[rows.Length * vocab];
            session.AppendRows(rows, tokens, 1, rows.Select(i => adapters[i]).ToArray(), all);
            for (int j = 0; j < rows.Length; j++)
            {
                int i = rows[j];
                last[i] = all.AsSpan(j * vocab, vocab).ToArray();
                AssertClose(alone[i][seen[i]], last[i]);
                seen[i]++;
            }
        }
        Assert.All(seen, s => Assert.Equal(steps + 1, s));
    }

    private static void AssertClose(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-4f + 1e-4f * Math.Abs(expected[i]), $"logit {i}: {expected[i]} vs {actual[i]}");
    }

    [Fact]
    public void StopStringsAreHeldBackUntilTheyCannotStartAStop()
    {
        string[] pieces = ["Hel", "lo, wo", "rld", "!"];
        var stream = new TextStream(ids => string.Concat(ids.Select(i => pieces[i])), ["wor"]);
        Assert.Equal("H", stream.Push(0));          // "el" could begin "wor"? no, but two characters are always held back
        Assert.Equal("ello, ", stream.Push(1));
        Assert.Equal("", stream.Push(2));
        Assert.True(stream.Stopped);
        Assert.Equal("", stream.Finish());
        Assert.Equal("Hello, ", stream.Text);
    }

    /// <summary>Concurrent requests with different adapters share the running batch and each equals `peftsharp generate`.</summary>
    [Fact]
    public async Task MixedAdapterBatchEqualsTheCliForEachAdapter()
    {
        using var engine = fixture.Engine(new ServingOptions { MaxNumSeqs = 4 });
        string[] prompts = ["Once upon a time", "The cat", "Hello there, friend", "A"];
        string?[] adapters = ["a", null, "b", "a"];
        var tasks = prompts.Select((p, i) => engine.GenerateAsync(new GenerationRequest(engine.EncodeText(p), adapters[i], Greedy(engine, 16)))).ToArray();
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(fixture.CliGenerate(prompts[i], adapters[i] == null ? null : adapters[i] == "a" ? fixture.AdapterA : fixture.AdapterB, 16, chat: false), results[i].Text);
        Assert.NotEqual(results[0].Text, (await engine.GenerateAsync(new GenerationRequest(engine.EncodeText(prompts[0]), null, Greedy(engine, 16)))).Text);
        Assert.True(engine.Metrics.RequestsTotal >= 5);
    }

    [Fact]
    public async Task StopStringsAndChatTemplateMatchTheCli()
    {
        using var engine = fixture.Engine();
        string full = fixture.CliGenerate("Tell me a story", fixture.AdapterB, 20, chat: true);
        Assert.True(full.Length > 4, full);
        string stop = full.Substring(full.Length / 2, 2);
        var prompt = engine.EncodeChat([ChatMessage.User("Tell me a story")]);
        var result = await engine.GenerateAsync(new GenerationRequest(prompt, "b", Greedy(engine, 20, [stop])));
        Assert.Equal(fixture.CliGenerate("Tell me a story", fixture.AdapterB, 20, chat: true, [stop]), result.Text);
        Assert.Equal(FinishReason.StopString, result.Finish);
    }

    [Fact]
    public async Task AFullQueueRefusesAndACancelledRequestFreesItsRow()
    {
        using var engine = fixture.Engine(new ServingOptions { MaxNumSeqs = 1, MaxQueue = 0 });
        using var cts = new CancellationTokenSource();
        var reader = engine.Submit(new GenerationRequest(engine.EncodeText("Hi"), "a", Greedy(engine, 200) is var o ? WithoutEos(o) : o), cts.Token);
        Assert.True(await reader.WaitToReadAsync());
        var refused = Assert.Throws<ServingException>(() => engine.Submit(new GenerationRequest(engine.EncodeText("Hi"), null, Greedy(engine, 4))));
        Assert.Equal(429, refused.StatusCode);
        cts.Cancel();
        FinishReason? finish = null;
        await foreach (var u in reader.ReadAllAsync()) finish = u.Finish ?? finish;
        Assert.Equal(FinishReason.Cancelled, finish);
        var after = await engine.GenerateAsync(new GenerationRequest(engine.EncodeText("Hi"), null, Greedy(engine, 4)));
        Assert.Equal(fixture.CliGenerate("Hi", null, 4, chat: false), after.Text);
        Assert.Equal(0, engine.Metrics.Running);
    }

    private static GenerationOptions WithoutEos(GenerationOptions o)
    {
        o.EosTokenIds = [];
        return o;
    }

    [Fact]
    public async Task AnAdapterForAnotherBaseIsRefusedWithTheReason()
    {
        using var engine = fixture.Engine();
        var e = await Assert.ThrowsAsync<ServingException>(() => engine.LoadAdapterAsync("other", fixture.OtherBaseAdapter));
        Assert.Equal(400, e.StatusCode);
        Assert.Contains("made for", e.Message);
        Assert.Contains("matched no module", e.Message);
        Assert.False(engine.HasModel("other"));
        await engine.UnloadAdapterAsync("a");
        Assert.Throws<ServingException>(() => engine.AdapterFor("a"));
    }

    [Fact]
    public async Task ShutdownLetsRunningRequestsFinishThenCancelsAndRefusesNewOnes()
    {
        using var engine = fixture.Engine(new ServingOptions { MaxNumSeqs = 2 });
        var running = engine.GenerateAsync(new GenerationRequest(engine.EncodeText("Hi"), "a", WithoutEos(Greedy(engine, 40))));
        await Task.Delay(20);
        await engine.ShutdownAsync(TimeSpan.FromSeconds(60));
        var finished = await running;
        Assert.Equal(FinishReason.Length, finished.Finish);
        Assert.Equal(40, finished.Tokens.Length);
        var refused = Assert.Throws<ServingException>(() => engine.Submit(new GenerationRequest(engine.EncodeText("Hi"), null, Greedy(engine, 4))));
        Assert.Equal(503, refused.StatusCode);

        using var other = fixture.Engine(new ServingOptions { MaxNumSeqs = 1 });
        var reader = other.Submit(new GenerationRequest(other.EncodeText("Hi"), "b", WithoutEos(Greedy(other, 250))));
        Assert.True(await reader.WaitToReadAsync());
        await other.ShutdownAsync(TimeSpan.Zero);
        FinishReason? finish = null;
        await foreach (var u in reader.ReadAllAsync()) finish = u.Finish ?? finish;
        Assert.Equal(FinishReason.Cancelled, finish);
    }
}
