using System.Text.RegularExpressions;
using Microsoft.Extensions.AI;
using PeftSharp.AI;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Server;
using PeftSharp.Serving;

namespace PeftSharp.Tests.Serving;

public sealed class ChatClientTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    [Fact]
    public async Task ChatOptionsMapAndModelIdPicksTheAdapter()
    {
        using var engine = fixture.Engine();
        IChatClient client = new PeftSharpChatClient(engine);
        var options = new ChatOptions { ModelId = "b", Temperature = 0, MaxOutputTokens = 12 };
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Tell me a story")], options);
        string expected = fixture.CliGenerate("Tell me a story", fixture.AdapterB, 12, chat: true);
        Assert.Equal(expected, response.Text);
        Assert.Equal("b", response.ModelId);
        Assert.Equal(engine.EncodeChat([PeftSharp.Formats.ChatTemplates.ChatMessage.User("Tell me a story")]).Length, response.Usage!.InputTokenCount);
        Assert.True(response.Usage.OutputTokenCount is > 0 and <= 12);

        var streamed = new System.Text.StringBuilder();
        UsageDetails? usage = null;
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Tell me a story")], options))
        {
            streamed.Append(update.Text);
            usage ??= update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
        }
        Assert.Equal(expected, streamed.ToString());
        Assert.Equal(response.Usage.OutputTokenCount, usage!.OutputTokenCount);

        // Stop sequences, a seed (same seed: same text), and the base model when ModelId names no adapter.
        string stop = expected.Substring(expected.Length / 2, 2);
        var cut = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Tell me a story")], new ChatOptions { ModelId = "b", Temperature = 0, MaxOutputTokens = 12, StopSequences = [stop] });
        Assert.Equal(fixture.CliGenerate("Tell me a story", fixture.AdapterB, 12, chat: true, [stop]), cut.Text);
        var sampled = new ChatOptions { Temperature = 0.8f, TopP = 0.9f, TopK = 20, Seed = 7, MaxOutputTokens = 10 };
        Assert.Equal((await client.GetResponseAsync("Hi", sampled)).Text, (await client.GetResponseAsync("Hi", sampled)).Text);
        Assert.Equal(fixture.CliGenerate("Hi", null, 6, chat: true), (await client.GetResponseAsync("Hi", new ChatOptions { Temperature = 0, MaxOutputTokens = 6 })).Text);
        await Assert.ThrowsAsync<ServingException>(() => client.GetResponseAsync("Hi", new ChatOptions { ModelId = "nope" }));
    }

    [Fact]
    public async Task CancellationEndsTheCallAndFreesTheRow()
    {
        using var engine = fixture.Engine(new ServingOptions { MaxNumSeqs = 1 });
        IChatClient client = new PeftSharpChatClient(engine);
        using var cts = new CancellationTokenSource();
        int pieces = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync("Tell me a long story", new ChatOptions { MaxOutputTokens = 200, Temperature = 0 }, cts.Token))
                if (++pieces == 2) cts.Cancel();
        });
        for (int i = 0; i < 200 && engine.Metrics.Running > 0; i++) await Task.Delay(25);
        Assert.Equal(0, engine.Metrics.Running);
    }

    /// <summary>
    /// Cancelling after the engine has already finished the request, its updates still queued: the next read throws instead of
    /// handing out the rest (the race that made the test above fail once under load: the stream ended without the exception).
    /// </summary>
    [Fact]
    public async Task CancellingAfterTheEngineFinishedStillThrowsOnTheNextRead()
    {
        using var engine = fixture.Engine(new ServingOptions { MaxNumSeqs = 1 });
        IChatClient client = new PeftSharpChatClient(engine);
        using var cts = new CancellationTokenSource();
        var updates = client.GetStreamingResponseAsync("Tell me a long story", new ChatOptions { MaxOutputTokens = 12, Temperature = 0 }, cts.Token)
            .GetAsyncEnumerator(CancellationToken.None);
        try
        {
            Assert.True(await updates.MoveNextAsync());
            for (int i = 0; i < 200 && engine.Metrics.Running > 0; i++) await Task.Delay(25);
            Assert.Equal(0, engine.Metrics.Running); // finished: every other update is queued
            cts.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await updates.MoveNextAsync());
        }
        finally
        {
            await updates.DisposeAsync();
        }
    }

    /// <summary>The IChatClient example of docs/commands/serve.md, word for word (between the snippet markers), runs.</summary>
    [Fact]
    public async Task TheDocumentedSnippetRuns()
    {
        string modelDir = fixture.Model, adapterDir = fixture.AdapterA;
        var output = new StringWriter();
        var console = Console.Out;
        Console.SetOut(output);
        try
        {
            // snippet:begin
            using IChatClient client = PeftSharpChatClient.Load(modelDir, new Dictionary<string, string> { ["support"] = adapterDir });
            var options = new ChatOptions { ModelId = "support", Temperature = 0, MaxOutputTokens = 32 };
            ChatResponse reply = await client.GetResponseAsync("How do I reset my password?", options);
            Console.WriteLine(reply.Text);
            Console.WriteLine($"{reply.Usage?.InputTokenCount} prompt + {reply.Usage?.OutputTokenCount} generated tokens");
            await foreach (ChatResponseUpdate update in client.GetStreamingResponseAsync("And my username?", options))
                Console.Write(update.Text);
            // snippet:end
        }
        finally
        {
            Console.SetOut(console);
        }
        Assert.StartsWith(fixture.CliGenerate("How do I reset my password?", fixture.AdapterA, 32, chat: true) + Environment.NewLine, output.ToString());

        string source = File.ReadAllText(Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Serving", "ChatClientTests.cs"));
        var snippet = Regex.Match(source, @"// snippet:begin\r?\n(.*?)\s*// snippet:end", RegexOptions.Singleline).Groups[1].Value;
        string doc = File.ReadAllText(Path.Combine(TestAssets.RepoRoot, "docs", "commands", "serve.md"));
        foreach (var line in snippet.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0))
            Assert.Contains(line, doc);
    }

    /// <summary>`peftsharp serve` starts on a free loopback port, answers, and shuts down gracefully when told to.</summary>
    [Fact]
    public async Task ServeCommandRunsAndStopsGracefully()
    {
        var output = new StringWriter();
        using var stop = new CancellationTokenSource();
        var run = ServeCommand.Run(fixture.Model, ServeCommand.ParseAdapters([$"a={fixture.AdapterA}"]), "tiny", new ServingOptions { MaxNumSeqs = 2 },
            new ServerOptions { Port = 0 }, ModelLoading.Load, TextWriter.Synchronized(output), stop.Token);
        Match address = Match.Empty;
        for (int i = 0; i < 400 && !(address = Regex.Match(output.ToString(), @"on (http://\S+)")).Success; i++)
        {
            if (run.IsCompleted) await run;
            await Task.Delay(25);
        }
        Assert.True(address.Success, output.ToString());
        using var http = new HttpClient { BaseAddress = new Uri(address.Groups[1].Value) };
        var models = await http.GetStringAsync("/v1/models");
        Assert.Contains("\"a\"", models);
        var pending = http.PostAsync("/v1/completions", new StringContent("""{"model": "a", "prompt": "Hi", "max_tokens": 8, "temperature": 0}""", System.Text.Encoding.UTF8, "application/json"));
        Assert.True((await pending).IsSuccessStatusCode);
        stop.Cancel();
        await run.WaitAsync(TimeSpan.FromSeconds(30));
        await Assert.ThrowsAsync<HttpRequestException>(() => http.GetStringAsync("/health"));
        Assert.Throws<PeftSharpException>(() => new ServerOptions { Host = "0.0.0.0" }.Validate());
    }
}
