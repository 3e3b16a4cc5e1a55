using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OpenAI;
using OpenAI.Chat;
using PeftSharp.Server;
using PeftSharp.Serving;

namespace PeftSharp.Tests.Serving;

/// <summary>The server on loopback (a free port), driven by the official OpenAI .NET SDK and, for the error cases, raw HTTP.</summary>
public sealed class OpenAiServerTests(ServingFixture fixture) : IClassFixture<ServingFixture>
{
    private const string Key = "test-key-123";

    private async Task<(OpenAiServer Server, ServingEngine Engine)> Start(ServingOptions? serving = null, ServerOptions? options = null)
    {
        var engine = fixture.Engine(serving ?? new ServingOptions { MaxNumSeqs = 4 });
        options ??= new ServerOptions();
        options.Port = 0;
        options.ApiKey ??= Key;
        return (await OpenAiServer.StartAsync(engine, options), engine);
    }

    private static OpenAIClient Sdk(OpenAiServer server) =>
        new(new ApiKeyCredential(Key), new OpenAIClientOptions { Endpoint = new Uri(server.Address, "/v1") });

    private static HttpClient Http(OpenAiServer server, string? key = Key)
    {
        var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromSeconds(60) };
        if (key != null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return http;
    }

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    [Fact]
    public async Task ChatThroughTheSdkEqualsTheCliPerAdapterStreamingOrNot()
    {
        var (server, engine) = await Start();
        await using var _ = server;
        using var __ = engine;
        var sdk = Sdk(server);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 14 };
        foreach (var (model, adapter) in new[] { ("a", fixture.AdapterA), ("b", fixture.AdapterB), ("tiny-llama", null) })
        {
            string expected = fixture.CliGenerate("Tell me a story", adapter, 14, chat: true);
            ChatCompletion completion = await sdk.GetChatClient(model).CompleteChatAsync([new UserChatMessage("Tell me a story")], options);
            Assert.Equal(expected, completion.Content.Count == 0 ? "" : completion.Content[0].Text);
            Assert.Equal(model, completion.Model);
            Assert.True(completion.Usage.OutputTokenCount is > 0 and <= 14);
            Assert.Equal(engine.EncodeChat([PeftSharp.Formats.ChatTemplates.ChatMessage.User("Tell me a story")]).Length, completion.Usage.InputTokenCount);

            var streamed = new StringBuilder();
            ChatFinishReason? finish = null;
            await foreach (var update in sdk.GetChatClient(model).CompleteChatStreamingAsync([new UserChatMessage("Tell me a story")], options))
            {
                foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
                finish ??= update.FinishReason;
            }
            Assert.Equal(expected, streamed.ToString());
            Assert.Equal(completion.FinishReason, finish);
        }
    }

    [Fact]
    public async Task ConcurrentCompletionsWithDifferentAdaptersShareABatchAndEqualTheCli()
    {
        var (server, engine) = await Start();
        await using var _ = server;
        using var __ = engine;
        using var http = Http(server);
        string[] prompts = ["Once upon a time", "The cat", "Hello there", "A dog"];
        string[] models = ["a", "b", "tiny-llama", "b"];
        var tasks = prompts.Select(async (p, i) =>
        {
            var response = await http.PostAsync("/v1/completions", Json(new JsonObject { ["model"] = models[i], ["prompt"] = p, ["max_tokens"] = 16, ["temperature"] = 0 }.ToJsonString()));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        }).ToArray();
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < prompts.Length; i++)
        {
            string? adapter = models[i] switch { "a" => fixture.AdapterA, "b" => fixture.AdapterB, _ => null };
            Assert.Equal(fixture.CliGenerate(prompts[i], adapter, 16, chat: false), results[i]["choices"]![0]!["text"]!.GetValue<string>());
            Assert.Equal("text_completion", results[i]["object"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task CompletionsStreamAsServerSentEventsWithUsageAndDone()
    {
        var (server, engine) = await Start();
        await using var _ = server;
        using var __ = engine;
        using var http = Http(server);
        var body = new JsonObject
        {
            ["model"] = "a", ["prompt"] = "Once upon a time", ["max_tokens"] = 12, ["temperature"] = 0, ["stream"] = true, ["n"] = 2,
            ["stream_options"] = new JsonObject { ["include_usage"] = true },
        };
        var response = await http.PostAsync("/v1/completions", Json(body.ToJsonString()));
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var lines = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", lines[^1]);
        var chunks = lines[..^1].Select(l => JsonNode.Parse(l["data: ".Length..])!).ToArray();
        var texts = new StringBuilder[] { new(), new() };
        foreach (var c in chunks.Where(c => c["choices"]!.AsArray().Count > 0))
            texts[c["choices"]![0]!["index"]!.GetValue<int>()].Append(c["choices"]![0]!["text"]!.GetValue<string>());
        string expected = fixture.CliGenerate("Once upon a time", fixture.AdapterA, 12, chat: false);
        Assert.Equal(expected, texts[0].ToString());
        Assert.Equal(expected, texts[1].ToString());
        var usage = chunks[^1]["usage"]!;
        Assert.Equal(engine.EncodeText("Once upon a time").Length, usage["prompt_tokens"]!.GetValue<int>()); // the prompt once, as OpenAI counts it for n > 1
        Assert.True(usage["completion_tokens"]!.GetValue<int>() > 0);
    }

    [Fact]
    public async Task ModelsListTheBaseAndAdaptersAndAdaptersLoadAndUnloadWhileServing()
    {
        var (server, engine) = await Start();
        await using var _ = server;
        using var __ = engine;
        var sdk = Sdk(server);
        var ids = (await sdk.GetOpenAIModelClient().GetModelsAsync()).Value.Select(m => m.Id).ToArray();
        Assert.Equal(["tiny-llama", "a", "b"], ids);
        using var http = Http(server);

        var load = await http.PostAsync("/v1/load_lora_adapter", Json(new JsonObject { ["lora_name"] = "a2", ["lora_path"] = fixture.AdapterA }.ToJsonString()));
        Assert.Equal(HttpStatusCode.OK, load.StatusCode);
        ChatCompletion viaA2 = await sdk.GetChatClient("a2").CompleteChatAsync([new UserChatMessage("Hi")], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 8 });
        Assert.Equal(fixture.CliGenerate("Hi", fixture.AdapterA, 8, chat: true), viaA2.Content.Count == 0 ? "" : viaA2.Content[0].Text);

        var other = await http.PostAsync("/v1/load_lora_adapter", Json(new JsonObject { ["lora_name"] = "other", ["lora_path"] = fixture.OtherBaseAdapter }.ToJsonString()));
        Assert.Equal(HttpStatusCode.BadRequest, other.StatusCode);
        var error = JsonNode.Parse(await other.Content.ReadAsStringAsync())!["error"]!;
        Assert.Contains("matched no module", error["message"]!.GetValue<string>());

        var unload = await http.PostAsync("/v1/unload_lora_adapter", Json("""{"lora_name": "a2"}"""));
        Assert.Equal(HttpStatusCode.OK, unload.StatusCode);
        var gone = await http.PostAsync("/v1/chat/completions", Json("""{"model": "a2", "messages": [{"role": "user", "content": "Hi"}]}"""));
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        Assert.Equal("model_not_found", JsonNode.Parse(await gone.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        var again = await http.PostAsync("/v1/unload_lora_adapter", Json("""{"lora_name": "a2"}"""));
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
        Assert.Contains("cannot be found", JsonNode.Parse(await again.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
        var byId = await http.PostAsync("/v1/unload_lora_adapter", Json("""{"lora_int_id": 1}"""));
        Assert.Equal(HttpStatusCode.BadRequest, byId.StatusCode);
        Assert.Contains("lora_int_id", JsonNode.Parse(await byId.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task BadRequestsGetOpenAiErrorsAndTheServerKeepsServing()
    {
        var (server, engine) = await Start(new ServingOptions { MaxNumSeqs = 2, MaxNewTokensLimit = 64 }, new ServerOptions { MaxBodyBytes = 4096 });
        await using var _ = server;
        using var __ = engine;
        using var http = Http(server);
        using var anonymous = Http(server, key: null);
        using var wrongKey = Http(server, key: "nope");
        const string ok = """{"model": "a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}""";

        async Task Expect(HttpClient client, string path, string body, HttpStatusCode status, string type)
        {
            var response = await client.PostAsync(path, Json(body));
            Assert.Equal(status, response.StatusCode);
            var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
            Assert.Equal(type, error["type"]!.GetValue<string>());
            Assert.False(string.IsNullOrEmpty(error["message"]!.GetValue<string>()));
        }

        await Expect(anonymous, "/v1/chat/completions", ok, HttpStatusCode.Unauthorized, "invalid_request_error");
        await Expect(wrongKey, "/v1/chat/completions", ok, HttpStatusCode.Unauthorized, "invalid_request_error");
        await Expect(http, "/v1/chat/completions", "{\"model\": \"a\", \"messages\": [", HttpStatusCode.BadRequest, "invalid_request_error");
        await Expect(http, "/v1/chat/completions", "[1, 2]", HttpStatusCode.BadRequest, "invalid_request_error");
        await Expect(http, "/v1/chat/completions", """{"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}""", HttpStatusCode.NotFound, "not_found_error");
        await Expect(http, "/v1/chat/completions", """{"model": "a", "messages": []}""", HttpStatusCode.BadRequest, "invalid_request_error");
        await Expect(http, "/v1/chat/completions", """{"model": "a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100000}""", HttpStatusCode.BadRequest, "invalid_request_error");
        await Expect(http, "/v1/chat/completions", """{"model": "a", "messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}""", HttpStatusCode.BadRequest, "invalid_request_error");
        await Expect(http, "/v1/chat/completions", """{"model": "a", "messages": [{"role": "user", "content": "Hi"}], "top_p": 7}""", HttpStatusCode.BadRequest, "invalid_request_error");
        await Expect(http, "/v1/completions", new JsonObject { ["model"] = "a", ["prompt"] = new JsonArray(Enumerable.Range(0, 300).Select(i => (JsonNode)(i % 50 + 3)).ToArray()) }.ToJsonString(), HttpStatusCode.BadRequest, "invalid_request_error");
        await Expect(http, "/v1/completions", new JsonObject { ["model"] = "a", ["prompt"] = new string('x', 8000) }.ToJsonString(), HttpStatusCode.RequestEntityTooLarge, "invalid_request_error");

        var health = await anonymous.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        var fine = await http.PostAsync("/v1/chat/completions", Json(ok));
        Assert.Equal(HttpStatusCode.OK, fine.StatusCode);
        var metrics = await anonymous.GetStringAsync("/metrics");
        Assert.Contains("peftsharp_requests_total", metrics);
        Assert.Contains("peftsharp_kv_cache_usage_ratio", metrics);
    }

    [Fact]
    public async Task SeededSamplingRepeatsAndStopsCutTheText()
    {
        var (server, engine) = await Start();
        await using var _ = server;
        using var __ = engine;
        using var http = Http(server);
        async Task<string> Complete(JsonObject body)
        {
            var response = await http.PostAsync("/v1/completions", Json(body.ToJsonString()));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return JsonNode.Parse(await response.Content.ReadAsStringAsync())!["choices"]![0]!["text"]!.GetValue<string>();
        }
        JsonObject Sampled(long seed) => new() { ["model"] = "b", ["prompt"] = "The cat", ["max_tokens"] = 16, ["temperature"] = 1.0, ["top_p"] = 0.9, ["seed"] = seed };
        Assert.Equal(await Complete(Sampled(42)), await Complete(Sampled(42)));
        string full = fixture.CliGenerate("The cat", fixture.AdapterB, 16, chat: false);
        string stop = full.Substring(full.Length / 2, 2);
        string cut = await Complete(new JsonObject { ["model"] = "b", ["prompt"] = "The cat", ["max_tokens"] = 16, ["temperature"] = 0, ["stop"] = stop });
        Assert.Equal(fixture.CliGenerate("The cat", fixture.AdapterB, 16, chat: false, [stop]), cut);
        Assert.DoesNotContain(stop, cut);
    }

    [Fact]
    public async Task AFullQueueAnswers429AndADisconnectedClientFreesItsRow()
    {
        var (server, engine) = await Start(new ServingOptions { MaxNumSeqs = 1, MaxQueue = 0, MaxNewTokensLimit = 4096 });
        await using var _ = server;
        using var __ = engine;
        using var http = Http(server);
        CancellationTokenSource cts;
        HttpResponseMessage response, refused;
        // The tiny model can finish 200 tokens before the second request arrives: then that one is served (200) and the
        // check is made again with a new long request; a server that never refuses fails after a few tries.
        for (int attempt = 1; ; attempt++)
        {
            cts = new CancellationTokenSource();
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = Json("""{"model": "a", "prompt": "Once", "max_tokens": 200, "temperature": 0, "stream": true, "ignore_eos": true}"""),
            };
            response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            var stream = await response.Content.ReadAsStreamAsync(cts.Token);
            Assert.True(await stream.ReadAsync(new byte[16], cts.Token) > 0); // the request holds the only row
            refused = await http.PostAsync("/v1/completions", Json("""{"model": "a", "prompt": "Hi", "max_tokens": 2}"""));
            if (refused.StatusCode == (HttpStatusCode)429 || attempt == 5) break;
            Assert.Equal(HttpStatusCode.OK, refused.StatusCode);
            cts.Cancel();
            response.Dispose();
            for (int i = 0; i < 200 && engine.Metrics.Running > 0; i++) await Task.Delay(25);
        }
        Assert.Equal((HttpStatusCode)429, refused.StatusCode);
        Assert.Equal("rate_limit_error", JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["type"]!.GetValue<string>());
        cts.Cancel();
        response.Dispose();
        for (int i = 0; i < 200 && engine.Metrics.Running > 0; i++) await Task.Delay(25);
        Assert.Equal(0, engine.Metrics.Running);
        var after = await http.PostAsync("/v1/completions", Json("""{"model": "a", "prompt": "Hi", "max_tokens": 2}"""));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    [Fact]
    public async Task ARequestThatRunsTooLongIsCancelledWith504()
    {
        var (server, engine) = await Start(options: new ServerOptions { RequestTimeout = TimeSpan.FromMilliseconds(1) });
        await using var _ = server;
        using var __ = engine;
        using var http = Http(server);
        var response = await http.PostAsync("/v1/completions", Json("""{"model": "a", "prompt": "Once", "max_tokens": 250, "temperature": 0, "ignore_eos": true}"""));
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        Assert.Equal("timeout_error", JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["type"]!.GetValue<string>());
        for (int i = 0; i < 200 && engine.Metrics.Running > 0; i++) await Task.Delay(25);
        Assert.Equal(0, engine.Metrics.Running);
    }
}
