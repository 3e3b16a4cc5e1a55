using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Data;

/// <summary>TRL's dataset types.</summary>
public enum DatasetFormat
{
    /// <summary>Language modelling: {"text": ...} (the dataset_text_field).</summary>
    Text,
    /// <summary>{"prompt": "...", "completion": "..."}.</summary>
    PromptCompletion,
    /// <summary>{"messages": [{"role", "content"}, ...]}.</summary>
    Conversational,
    /// <summary>{"prompt": [messages], "completion": [messages]}.</summary>
    ConversationalPromptCompletion,
}

/// <summary>One training example in one of TRL's formats; <see cref="Where"/> is "file:line".</summary>
public sealed record SftExample(DatasetFormat Format, string Where)
{
    public string? Text { get; init; }
    public string? Prompt { get; init; }
    public string? Completion { get; init; }
    public IReadOnlyList<ChatMessage>? Messages { get; init; }
    public IReadOnlyList<ChatMessage>? PromptMessages { get; init; }
    public IReadOnlyList<ChatMessage>? CompletionMessages { get; init; }

    public static SftExample FromText(string text, string where = "") => new(DatasetFormat.Text, where) { Text = text };
    public static SftExample FromPromptCompletion(string prompt, string completion, string where = "") =>
        new(DatasetFormat.PromptCompletion, where) { Prompt = prompt, Completion = completion };
    public static SftExample FromMessages(IReadOnlyList<ChatMessage> messages, string where = "") =>
        new(DatasetFormat.Conversational, where) { Messages = messages };
}

/// <summary>
/// Detects the format as TRL does (a "messages" list → conversational; "prompt" and "completion" →
/// prompt-completion, conversational when the prompt is a message list; the text field → language
/// modelling) and converts records, naming the file, line and problem when a record does not fit.
/// </summary>
public static class SftExamples
{
    public static DatasetFormat Detect(JsonObject fields, string textField, string where)
    {
        if (fields["messages"] is JsonArray) return DatasetFormat.Conversational;
        if (fields.ContainsKey("prompt") && fields.ContainsKey("completion"))
            return fields["prompt"] is JsonArray ? DatasetFormat.ConversationalPromptCompletion : DatasetFormat.PromptCompletion;
        if (fields.ContainsKey(textField)) return DatasetFormat.Text;
        throw new PeftSharpException($"{where}: cannot tell the data format: expected a \"{textField}\" field (language modelling), " +
            $"\"prompt\" and \"completion\", or a \"messages\" list; found {Keys(fields)}.");
    }

    public static DatasetFormat ParseFormat(string name) => name switch
    {
        "text" => DatasetFormat.Text,
        "prompt_completion" => DatasetFormat.PromptCompletion,
        "conversational" => DatasetFormat.Conversational,
        _ => throw new PeftSharpException($"data.format: unknown format '{name}'; expected auto, text, prompt_completion or conversational."),
    };

    /// <summary>Converts a record of the (already detected) format; throws a PeftSharpException naming the problem.</summary>
    public static SftExample Convert(DataRecord record, DatasetFormat format, string textField)
    {
        var f = record.Fields;
        string where = record.Where;
        switch (format)
        {
            case DatasetFormat.Text:
                return FromText(String(f, textField, where), where);
            case DatasetFormat.PromptCompletion:
            case DatasetFormat.ConversationalPromptCompletion:
                if (f["prompt"] is JsonArray || f["completion"] is JsonArray)
                    return new SftExample(DatasetFormat.ConversationalPromptCompletion, where)
                    {
                        PromptMessages = Messages(f, "prompt", where),
                        CompletionMessages = Messages(f, "completion", where),
                    };
                return SftExample.FromPromptCompletion(String(f, "prompt", where), String(f, "completion", where), where);
            default:
                return SftExample.FromMessages(Messages(f, "messages", where), where);
        }
    }

    private static SftExample FromText(string text, string where) => SftExample.FromText(text, where);

    private static string String(JsonObject f, string key, string where)
    {
        if (!f.TryGetPropertyValue(key, out var node)) throw new PeftSharpException($"{where}: missing field \"{key}\" (found {Keys(f)}).");
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String) return v.GetValue<string>();
        throw new PeftSharpException($"{where}: field \"{key}\" is {DataFiles.Kind(node)}, expected a string.");
    }

    private static List<ChatMessage> Messages(JsonObject f, string key, string where)
    {
        if (!f.TryGetPropertyValue(key, out var node)) throw new PeftSharpException($"{where}: missing field \"{key}\" (found {Keys(f)}).");
        if (node is not JsonArray array) throw new PeftSharpException($"{where}: field \"{key}\" is {DataFiles.Kind(node)}, expected a list of messages.");
        var messages = new List<ChatMessage>(array.Count);
        for (int i = 0; i < array.Count; i++)
        {
            if (array[i] is not JsonObject m) throw new PeftSharpException($"{where}: {key}[{i}] is {DataFiles.Kind(array[i])}, expected {{\"role\", \"content\"}}.");
            if (m["role"] is not JsonValue r || r.GetValueKind() != JsonValueKind.String)
                throw new PeftSharpException($"{where}: {key}[{i}].role is {(m.ContainsKey("role") ? DataFiles.Kind(m["role"]) : "missing")}, expected a string.");
            string? content = null;
            if (m.TryGetPropertyValue("content", out var c) && c != null)
            {
                if (c is JsonValue cv && cv.GetValueKind() == JsonValueKind.String) content = cv.GetValue<string>();
                else throw new PeftSharpException($"{where}: {key}[{i}].content is {DataFiles.Kind(c)}, expected a string.");
            }
            var extra = new Dictionary<string, object?>();
            foreach (var (k, v) in m)
                if (k != "role" && k != "content") extra[k] = v == null ? null : JsonSerializer.Deserialize<JsonElement>(v.ToJsonString());
            messages.Add(new ChatMessage(r.GetValue<string>(), content, extra));
        }
        return messages;
    }

    private static string Keys(JsonObject f) => f.Count == 0 ? "no fields" : string.Join(", ", f.Select(p => $"\"{p.Key}\""));
}
