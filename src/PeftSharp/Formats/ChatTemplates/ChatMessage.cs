namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// One conversation turn as a chat template sees it: <c>message.role</c>, <c>message.content</c>, and
/// any other key in <see cref="Extra"/> (tool_calls, name, reasoning_content...). Extra values may be
/// strings, numbers, booleans, null, lists, dictionaries or <see cref="System.Text.Json.JsonElement"/>s;
/// templates read them as Python values.
/// </summary>
public sealed class ChatMessage
{
    public ChatMessage(string role, string? content, IReadOnlyDictionary<string, object?>? extra = null)
    {
        Role = role ?? throw new ArgumentNullException(nameof(role));
        Content = content;
        Extra = extra ?? new Dictionary<string, object?>();
    }

    public string Role { get; }

    /// <summary>The text; null is the template's None (e.g. an assistant turn that only has tool_calls).</summary>
    public string? Content { get; }

    public IReadOnlyDictionary<string, object?> Extra { get; }

    public static ChatMessage System(string content) => new("system", content);
    public static ChatMessage User(string content) => new("user", content);
    public static ChatMessage Assistant(string content) => new("assistant", content);

    internal ChatMessage WithContent(string? content) => new(Role, content, Extra);

    internal Dictionary<string, object?> ToTemplateValue()
    {
        var d = new Dictionary<string, object?>(StringComparer.Ordinal) { ["role"] = Role, ["content"] = Content };
        foreach (var (key, value) in Extra) d[key] = Py.FromNet(value);
        return d;
    }

    public override string ToString() => $"{Role}: {Content}";
}
