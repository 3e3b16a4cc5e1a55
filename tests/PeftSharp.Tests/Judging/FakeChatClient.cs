using Microsoft.Extensions.AI;

namespace PeftSharp.Tests.Judging;

/// <summary>An IChatClient whose answer to the user message is <paramref name="answer"/>(content, call number, token); it counts calls and the most in flight at once.</summary>
public sealed class FakeChatClient(Func<string, int, CancellationToken, Task<string>> answer) : IChatClient
{
    private int _calls, _inFlight, _maxInFlight;

    public FakeChatClient(Func<string, string> answer) : this((content, _, _) => Task.FromResult(answer(content))) { }

    public int Calls => Volatile.Read(ref _calls);
    public int MaxInFlight => Volatile.Read(ref _maxInFlight);
    public List<ChatOptions?> Options { get; } = [];

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        int call = Interlocked.Increment(ref _calls);
        lock (Options) Options.Add(options);
        int now = Interlocked.Increment(ref _inFlight);
        int seen;
        while ((seen = Volatile.Read(ref _maxInFlight)) < now && Interlocked.CompareExchange(ref _maxInFlight, now, seen) != seen) { }
        try
        {
            var list = messages.ToList();
            Assert.Single(list);
            Assert.Equal(ChatRole.User, list[0].Role);
            return new ChatResponse(new ChatMessage(ChatRole.Assistant, await answer(list[0].Text, call, cancellationToken)));
        }
        finally { Interlocked.Decrement(ref _inFlight); }
    }

    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException();

    public object? GetService(Type serviceType, object? serviceKey = null) => null;

    public void Dispose() { }
}
