using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PeftSharp.Models.Generation;
using PeftSharp.Serving;
using TemplateMessage = PeftSharp.Formats.ChatTemplates.ChatMessage;

namespace PeftSharp.Server;

/// <summary>
/// The OpenAI-compatible HTTP host over a <see cref="ServingEngine"/> (ASP.NET Core minimal APIs): /v1/models,
/// /v1/chat/completions, /v1/completions (streaming as server-sent events ending in [DONE]), vLLM's
/// /v1/load_lora_adapter and /v1/unload_lora_adapter, /health and /metrics (Prometheus text). It only parses, checks
/// and formats; scheduling, batching and generation are the engine's. Errors are OpenAI's JSON with a 4xx status.
/// </summary>
public sealed class OpenAiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ServingEngine _engine;
    private readonly ServerOptions _options;

    private OpenAiServer(WebApplication app, ServingEngine engine, ServerOptions options)
    {
        _app = app;
        _engine = engine;
        _options = options;
    }

    /// <summary>The address the server listens on (with the port picked when <see cref="ServerOptions.Port"/> is 0).</summary>
    public Uri Address { get; private set; } = null!;

    public ServingEngine Engine => _engine;

    /// <summary>Builds and starts the server on <paramref name="options"/>' host and port.</summary>
    public static async Task<OpenAiServer> StartAsync(ServingEngine engine, ServerOptions options, CancellationToken cancellationToken = default)
    {
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.ShutdownDrain + TimeSpan.FromSeconds(5));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            k.AddServerHeader = false;
            if (options.Host == "localhost") k.ListenLocalhost(options.Port);
            else k.Listen(IPAddress.Parse(options.Host.Trim('[', ']')), options.Port);
        });
        var app = builder.Build();
        var server = new OpenAiServer(app, engine, options);
        server.Map();
        app.Lifetime.ApplicationStopping.Register(() => engine.ShutdownAsync(options.ShutdownDrain).GetAwaiter().GetResult());
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Address = new Uri(address.Replace("[::]", "127.0.0.1").Replace("0.0.0.0", "127.0.0.1"));
        return server;
    }

    /// <summary>Runs until the host is stopped (Ctrl+C, SIGTERM): running requests get the drain time, then are cancelled.</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    private void Map()
    {
        _app.Use(async (context, next) =>
        {
            try
            {
                if (_options.ApiKey is { Length: > 0 } key && context.Request.Path.StartsWithSegments("/v1") && !Authorized(context.Request, key))
                {
                    await Error(context, new ServingException(401, "invalid_request_error", "Incorrect or missing API key: send `Authorization: Bearer <key>`.", code: "invalid_api_key"));
                    return;
                }
                await next(context);
            }
            catch (ServingException e)
            {
                await Error(context, e);
            }
            catch (BadHttpRequestException e)
            {
                await Error(context, new ServingException(e.StatusCode, "invalid_request_error", e.Message));
            }
            catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
            {
                // The client went away; its row was freed at the engine's next step.
            }
        });
        _app.MapGet("/health", () => Results.Text("{\"status\":\"ok\"}", "application/json"));
        _app.MapGet("/metrics", Metrics);
        _app.MapGet("/v1/models", Models);
        _app.MapPost("/v1/chat/completions", ChatCompletions);
        _app.MapPost("/v1/completions", Completions);
        _app.MapPost("/v1/load_lora_adapter", (Delegate)LoadAdapter);
        _app.MapPost("/v1/unload_lora_adapter", (Delegate)UnloadAdapter);
    }

    private static bool Authorized(HttpRequest request, string key)
    {
        string? header = request.Headers.Authorization;
        if (header == null || !header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return false;
        var given = Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim());
        return CryptographicOperations.FixedTimeEquals(given, Encoding.UTF8.GetBytes(key));
    }

    private static async Task Error(HttpContext context, ServingException e)
    {
        if (context.Response.HasStarted) return;
        context.Response.StatusCode = e.StatusCode;
        context.Response.ContentType = "application/json";
        var body = new JsonObject
        {
            ["error"] = new JsonObject { ["message"] = e.Message, ["type"] = e.Type, ["param"] = e.Param, ["code"] = e.Code ?? (JsonNode?)null },
        };
        await context.Response.WriteAsync(body.ToJsonString());
    }

    private static async Task<JsonObject> ReadBody(HttpContext context)
    {
        JsonNode? node;
        try
        {
            node = await JsonNode.ParseAsync(context.Request.Body, cancellationToken: context.RequestAborted);
        }
        catch (JsonException e)
        {
            throw ServingException.BadRequest($"The request body is not valid JSON: {e.Message}");
        }
        return node as JsonObject ?? throw ServingException.BadRequest("The request body must be a JSON object.");
    }

    private IResult Models()
    {
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var data = new JsonArray
        {
            new JsonObject { ["id"] = _engine.ModelName, ["object"] = "model", ["created"] = created, ["owned_by"] = "peftsharp", ["root"] = _engine.ModelName, ["parent"] = null, ["max_model_len"] = _engine.MaxModelLen },
        };
        foreach (var (name, path) in _engine.Adapters.OrderBy(a => a.Key, StringComparer.Ordinal))
            data.Add(new JsonObject { ["id"] = name, ["object"] = "model", ["created"] = created, ["owned_by"] = "peftsharp", ["root"] = path, ["parent"] = _engine.ModelName, ["max_model_len"] = _engine.MaxModelLen });
        return Results.Text(new JsonObject { ["object"] = "list", ["data"] = data }.ToJsonString(), "application/json");
    }

    private IResult Metrics()
    {
        var m = _engine.Metrics;
        var text = new StringBuilder();
        void Line(string name, string help, string type, double value)
        {
            text.Append("# HELP peftsharp_").Append(name).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE peftsharp_").Append(name).Append(' ').Append(type).Append('\n');
            text.Append("peftsharp_").Append(name).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }
        Line("requests_total", "Requests accepted (each choice counts).", "counter", m.RequestsTotal);
        Line("requests_running", "Sequences in the running batch.", "gauge", m.Running);
        Line("requests_waiting", "Sequences waiting for a row.", "gauge", m.Waiting);
        Line("requests_cancelled_total", "Sequences cancelled (disconnect, timeout, shutdown).", "counter", m.RequestsCancelled);
        Line("requests_failed_total", "Sequences that failed while generating.", "counter", m.RequestsFailed);
        Line("prompt_tokens_total", "Prompt tokens accepted.", "counter", m.PromptTokensTotal);
        Line("generation_tokens_total", "Tokens generated.", "counter", m.GeneratedTokensTotal);
        Line("generation_tokens_per_second", "Tokens generated per second over the last 10 s.", "gauge", m.TokensPerSecond);
        Line("kv_cache_tokens_used", "KV-cache slots holding tokens.", "gauge", m.KvCacheTokensUsed);
        Line("kv_cache_tokens_capacity", "KV-cache slots allocated (max-num-seqs x max-model-len).", "gauge", m.KvCacheTokensCapacity);
        Line("kv_cache_usage_ratio", "Used over allocated KV-cache slots.", "gauge", m.KvCacheTokensCapacity == 0 ? 0 : (double)m.KvCacheTokensUsed / m.KvCacheTokensCapacity);
        Line("tokens_reserved", "Tokens (prompt + max new) reserved by running sequences; bounded by --max-num-tokens.", "gauge", m.TokensReserved);
        Line("lora_adapters", "LoRA adapters loaded.", "gauge", m.Adapters);
        Line("uptime_seconds", "Seconds since the engine started.", "gauge", m.UptimeSeconds);
        return Results.Text(text.ToString(), "text/plain; version=0.0.4");
    }

    private async Task<IResult> LoadAdapter(HttpContext context)
    {
        if (!_options.AllowRuntimeLoraUpdating) throw new ServingException(403, "invalid_request_error", "loading adapters at run time is disabled on this server.");
        var body = await ReadBody(context);
        string name = String(body, "lora_name") ?? throw ServingException.BadRequest("lora_name is required.", "lora_name");
        string path = String(body, "lora_path") ?? throw ServingException.BadRequest("lora_path is required.", "lora_path");
        await _engine.LoadAdapterAsync(name, path);
        return Results.Text($"Success: LoRA adapter '{name}' added successfully.");
    }

    private async Task<IResult> UnloadAdapter(HttpContext context)
    {
        if (!_options.AllowRuntimeLoraUpdating) throw new ServingException(403, "invalid_request_error", "unloading adapters at run time is disabled on this server.");
        var body = await ReadBody(context);
        // vLLM also takes lora_int_id, its engine's numeric id; adapters here are known by name only.
        string name = String(body, "lora_name") ?? throw ServingException.BadRequest(body.ContainsKey("lora_int_id")
            ? "lora_int_id is not supported by this server (adapters have no numeric ids here); give lora_name." : "lora_name is required.", "lora_name");
        await _engine.UnloadAdapterAsync(name);
        return Results.Text($"Success: LoRA adapter '{name}' removed successfully.");
    }

    private async Task ChatCompletions(HttpContext context)
    {
        var body = await ReadBody(context);
        var messages = body["messages"] as JsonArray ?? throw ServingException.BadRequest("messages must be a non-empty array.", "messages");
        if (messages.Count == 0) throw ServingException.BadRequest("messages must be a non-empty array.", "messages");
        var conversation = new List<TemplateMessage>();
        foreach (var m in messages)
        {
            if (m is not JsonObject message) throw ServingException.BadRequest("each message must be an object with a role and content.", "messages");
            string role = String(message, "role") ?? throw ServingException.BadRequest("each message needs a role.", "messages");
            conversation.Add(new TemplateMessage(role, Content(message["content"])));
        }
        var prompt = _engine.EncodeChat(conversation);
        await Run(context, body, prompt, chat: true);
    }

    private async Task Completions(HttpContext context)
    {
        var body = await ReadBody(context);
        int[] prompt = body["prompt"] switch
        {
            JsonValue v when v.TryGetValue(out string? text) => _engine.EncodeText(text),
            JsonArray { Count: 1 } a when a[0] is JsonValue v && v.TryGetValue(out string? text) => _engine.EncodeText(text),
            JsonArray { Count: > 0 } a when a.All(x => x is JsonValue v && v.TryGetValue(out int _)) => a.Select(x => x!.GetValue<int>()).ToArray(),
            null => throw ServingException.BadRequest("prompt is required.", "prompt"),
            _ => throw ServingException.BadRequest("prompt must be a string, a list of one string, or a list of token ids.", "prompt"),
        };
        await Run(context, body, prompt, chat: false);
    }

    private static string Content(JsonNode? content) => content switch
    {
        null => "",
        JsonValue v when v.TryGetValue(out string? s) => s,
        JsonArray parts => string.Concat(parts.Select(p => p is JsonObject o && String(o, "type") == "text" ? String(o, "text") ?? ""
            : throw ServingException.BadRequest("only text content parts are supported.", "messages"))),
        _ => throw ServingException.BadRequest("message content must be a string or a list of text parts.", "messages"),
    };

    /// <summary>Shared by both endpoints: settings, bounds, submission of n choices, then a JSON or SSE answer.</summary>
    private async Task Run(HttpContext context, JsonObject body, int[] prompt, bool chat)
    {
        string model = String(body, "model") ?? throw ServingException.BadRequest("model is required.", "model");
        string? adapter = _engine.AdapterFor(model);
        int maxPrompt = Math.Min(_options.MaxPromptTokens ?? int.MaxValue, _engine.MaxModelLen - 1);
        if (prompt.Length > maxPrompt)
            throw new ServingException(400, "invalid_request_error", $"This model's maximum context length is {_engine.MaxModelLen} tokens and prompts may hold at most {maxPrompt}. However, your prompt has {prompt.Length} tokens.", chat ? "messages" : "prompt", "context_length_exceeded");
        int n = Int(body, "n") ?? 1;
        if (n < 1 || n > _options.MaxChoices) throw ServingException.BadRequest($"n must be between 1 and {_options.MaxChoices} (got {n}).", "n");
        var stop = body["stop"] switch
        {
            null => null,
            JsonValue v when v.TryGetValue(out string? s) => new[] { s },
            JsonArray a when a.All(x => x is JsonValue v && v.TryGetValue(out string? _)) => a.Select(x => x!.GetValue<string>()).ToArray(),
            _ => throw ServingException.BadRequest("stop must be a string or a list of strings.", "stop"),
        };
        if (stop != null && stop.Length > 4) throw ServingException.BadRequest("stop takes at most 4 sequences.", "stop");
        if (stop != null && stop.Any(string.IsNullOrEmpty)) throw ServingException.BadRequest("stop sequences must not be empty.", "stop");
        long? seed = Long(body, "seed");
        var settings = new GenerationSettings
        {
            MaxNewTokens = Int(body, "max_completion_tokens") ?? Int(body, "max_tokens"),
            Temperature = Double(body, "temperature"),
            TopP = Double(body, "top_p"),
            TopK = Int(body, "top_k") is int k ? (k < 0 ? 0 : k) : null,
            RepetitionPenalty = Double(body, "repetition_penalty"),
            Seed = seed is long s2 ? unchecked((ulong)s2) : null,
            Stop = stop,
        };
        var options = _engine.ResolveOptions(settings);
        if (Bool(body, "ignore_eos") == true) options.EosTokenIds = []; // vLLM's extension: generate max_tokens
        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = body["stream_options"] is JsonObject so && (Bool(so, "include_usage") ?? false);

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        timeout.CancelAfter(_options.RequestTimeout);
        var readers = new List<ChannelReader<GenerationUpdate>>();
        try
        {
            for (int i = 0; i < n; i++)
                readers.Add(_engine.Submit(new GenerationRequest(prompt, adapter, options) { ChoiceIndex = i }, timeout.Token));
        }
        catch
        {
            timeout.Cancel(); // the choices already queued leave at the next step
            throw;
        }

        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var merged = Channel.CreateUnbounded<(int Index, GenerationUpdate Update)>();
        var pumps = readers.Select((r, i) => Task.Run(async () =>
        {
            await foreach (var u in r.ReadAllAsync(CancellationToken.None)) merged.Writer.TryWrite((i, u));
        })).ToArray();
        _ = Task.WhenAll(pumps).ContinueWith(t => merged.Writer.TryComplete(t.Exception), TaskScheduler.Default);

        var texts = Enumerable.Range(0, n).Select(_ => new StringBuilder()).ToArray();
        var finish = new FinishReason?[n];
        int completionTokens = 0;
        if (stream)
        {
            context.Response.StatusCode = 200;
            context.Response.ContentType = "text/event-stream";
            context.Response.Headers.CacheControl = "no-cache";
            if (chat)
                for (int i = 0; i < n; i++)
                    await Send(context, Chunk(id, created, model, chat, i, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null, null));
            await foreach (var (index, u) in merged.Reader.ReadAllAsync(CancellationToken.None))
            {
                if (u.TokenId >= 0) completionTokens++;
                if (u.Finish == FinishReason.Cancelled) continue;
                // A chunk per generated token, its text possibly empty (held back: part of a character or of a possible stop string).
                if (u.TokenId >= 0 || u.Finish != null)
                    await Send(context, Chunk(id, created, model, chat, index, u.Text.Length > 0 || u.Finish == null ? new JsonObject { ["content"] = u.Text } : new JsonObject(), u.Text, u.Finish is { } f ? Reason(f) : null));
            }
            if (context.RequestAborted.IsCancellationRequested) return;
            if (includeUsage)
                await Send(context, new JsonObject
                {
                    ["id"] = id, ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = created, ["model"] = model,
                    ["choices"] = new JsonArray(), ["usage"] = Usage(prompt.Length, completionTokens),
                });
            await context.Response.WriteAsync("data: [DONE]\n\n");
            await context.Response.Body.FlushAsync();
            return;
        }

        await foreach (var (index, u) in merged.Reader.ReadAllAsync(CancellationToken.None))
        {
            if (u.TokenId >= 0) completionTokens++;
            texts[index].Append(u.Text);
            if (u.Finish is { } f) finish[index] = f;
        }
        if (finish.Any(f => f == FinishReason.Cancelled))
        {
            if (context.RequestAborted.IsCancellationRequested) return;
            throw new ServingException(504, "timeout_error", $"the request did not finish within {_options.RequestTimeout.TotalSeconds:0.#} s and was cancelled.");
        }
        var choices = new JsonArray();
        for (int i = 0; i < n; i++)
            choices.Add(chat
                ? new JsonObject { ["index"] = i, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = texts[i].ToString() }, ["logprobs"] = null, ["finish_reason"] = Reason(finish[i]!.Value) }
                : new JsonObject { ["index"] = i, ["text"] = texts[i].ToString(), ["logprobs"] = null, ["finish_reason"] = Reason(finish[i]!.Value) });
        var response = new JsonObject
        {
            ["id"] = id, ["object"] = chat ? "chat.completion" : "text_completion", ["created"] = created, ["model"] = model,
            ["choices"] = choices, ["usage"] = Usage(prompt.Length, completionTokens),
        };
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(response.ToJsonString());
    }

    private static JsonObject Chunk(string id, long created, string model, bool chat, int index, JsonObject delta, string? text, string? finishReason) => new()
    {
        ["id"] = id, ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = created, ["model"] = model,
        ["choices"] = new JsonArray(chat
            ? new JsonObject { ["index"] = index, ["delta"] = delta, ["logprobs"] = null, ["finish_reason"] = finishReason }
            : new JsonObject { ["index"] = index, ["text"] = text ?? "", ["logprobs"] = null, ["finish_reason"] = finishReason }),
    };

    private static async Task Send(HttpContext context, JsonObject chunk)
    {
        if (context.RequestAborted.IsCancellationRequested) return;
        try
        {
            await context.Response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
        }
        catch (OperationCanceledException)
        {
        }
        catch (IOException)
        {
        }
    }

    private static JsonObject Usage(int prompt, int completion) => new()
    {
        ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion,
    };

    private static string Reason(FinishReason reason) => reason == FinishReason.Length ? "length" : "stop";

    private static string? String(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw ServingException.BadRequest($"{name} must be a string.", name),
    };

    private static int? Int(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out int i) => i,
        JsonValue v when v.TryGetValue(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue => (int)d,
        _ => throw ServingException.BadRequest($"{name} must be an integer.", name),
    };

    private static long? Long(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out long i) => i,
        _ => throw ServingException.BadRequest($"{name} must be an integer.", name),
    };

    private static double? Double(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out double d) => d,
        _ => throw ServingException.BadRequest($"{name} must be a number.", name),
    };

    private static bool? Bool(JsonObject o, string name) => o[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out bool b) => b,
        _ => throw ServingException.BadRequest($"{name} must be true or false.", name),
    };
}
