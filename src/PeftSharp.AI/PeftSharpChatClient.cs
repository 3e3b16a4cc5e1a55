using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using PeftSharp.Models.Generation;
using PeftSharp.Serving;
using TemplateMessage = PeftSharp.Formats.ChatTemplates.ChatMessage;

namespace PeftSharp.AI;

/// <summary>
/// A PeftSharp model and its LoRA adapters as an <see cref="IChatClient"/>: requests go through a <see cref="ServingEngine"/>
/// (continuous batching, one adapter per request), so concurrent calls share decode steps. <see cref="ChatOptions.ModelId"/>
/// picks the adapter (the base model's name or none: the base model); temperature, top_p, top_k, max output tokens, stop
/// sequences and seed map to generation settings; usage is reported in tokens; cancellation frees the sequence's row.
/// </summary>
public sealed class PeftSharpChatClient : IChatClient
{
    private readonly ServingEngine _engine;
    private readonly bool _ownsEngine;

    /// <summary>A client over an engine the caller owns (a server and a chat client may share one).</summary>
    public PeftSharpChatClient(ServingEngine engine, bool ownsEngine = false)
    {
        _engine = engine ?? throw new ArgumentNullException(nameof(engine));
        _ownsEngine = ownsEngine;
    }

    /// <summary>
    /// Loads a model folder and adapters (name → folder) into an engine the client owns and disposes.
    /// </summary>
    public static PeftSharpChatClient Load(string modelFolder, IReadOnlyDictionary<string, string>? adapters = null, ServingOptions? options = null)
    {
        var engine = ServingEngine.Load(modelFolder, options);
        try
        {
            foreach (var (name, folder) in adapters ?? new Dictionary<string, string>())
                engine.LoadAdapterAsync(name, folder).GetAwaiter().GetResult();
            return new PeftSharpChatClient(engine, ownsEngine: true);
        }
        catch
        {
            engine.Dispose();
            throw;
        }
    }

    /// <summary>The engine requests run on (to load or unload adapters).</summary>
    public ServingEngine Engine => _engine;

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        var result = await _engine.GenerateAsync(request, cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text))
        {
            ModelId = options?.ModelId ?? _engine.ModelName,
            FinishReason = Map(result.Finish),
            ResponseId = "chatcmpl-" + Guid.NewGuid().ToString("N"),
            CreatedAt = DateTimeOffset.UtcNow,
            Usage = Usage(result.PromptTokens, result.Tokens.Length),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        var reader = _engine.Submit(request, cancellationToken);
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        string model = options?.ModelId ?? _engine.ModelName;
        int generated = 0;
        await foreach (var update in reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
        {
            // Updates the engine produced before the caller cancelled may still be queued: once cancelled, none is handed out
            // (the engine ends the request through the same token). Checking only for the engine's Cancelled finish let a
            // request that had already finished in the queue end without the exception.
            cancellationToken.ThrowIfCancellationRequested();
            if (update.TokenId >= 0) generated++;
            if (update.Finish is { } finish)
            {
                if (finish == FinishReason.Cancelled) cancellationToken.ThrowIfCancellationRequested();
                var last = new ChatResponseUpdate(ChatRole.Assistant, update.Text) { ResponseId = id, MessageId = id, ModelId = model, FinishReason = Map(finish) };
                last.Contents.Add(new UsageContent(Usage(request.PromptIds.Length, generated)));
                yield return last;
                yield break;
            }
            if (update.Text.Length > 0)
                yield return new ChatResponseUpdate(ChatRole.Assistant, update.Text) { ResponseId = id, MessageId = id, ModelId = model };
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey != null ? null
        : serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("peftsharp", null, _engine.ModelName)
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(_engine) ? _engine
        : null;

    public void Dispose()
    {
        if (_ownsEngine) _engine.Dispose();
    }

    /// <summary>The messages through the chat template, and <paramref name="options"/> as generation settings.</summary>
    private GenerationRequest Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var conversation = messages.Select(m => new TemplateMessage(m.Role.Value, m.Text)).ToList();
        var settings = new GenerationSettings
        {
            MaxNewTokens = options?.MaxOutputTokens,
            Temperature = options?.Temperature,
            TopP = options?.TopP,
            TopK = options?.TopK,
            Seed = options?.Seed is long seed ? unchecked((ulong)seed) : null,
            Stop = options?.StopSequences?.ToArray(),
        };
        var resolved = _engine.ResolveOptions(settings);
        return new GenerationRequest(_engine.EncodeChat(conversation), _engine.AdapterFor(options?.ModelId), resolved);
    }

    private static ChatFinishReason Map(FinishReason reason) => reason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails Usage(int prompt, int completion) => new()
    {
        InputTokenCount = prompt,
        OutputTokenCount = completion,
        TotalTokenCount = prompt + completion,
    };
}
