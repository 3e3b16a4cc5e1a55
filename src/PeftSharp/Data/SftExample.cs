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
    /// <summary>Preference data: {"prompt", "chosen", "rejected"} or, with an implicit prompt, {"chosen", "rejected"} (strings or messages); for preference trainers, never SFT.</summary>
    Preference,
    /// <summary>Unpaired preference data: {"prompt", "completion", "label"} (KTO/BCO); never SFT.</summary>
    UnpairedPreference,
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
    /// <summary>The record's `tools` (a list of function schemas), passed to the chat template as `tools`.</summary>
    public System.Text.Json.JsonElement? Tools { get; init; }

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
        if (fields["messages"] is JsonArray || fields["conversations"] is JsonArray) return DatasetFormat.Conversational;
        foreach (var key in new[] { "messages", "conversations" })
            if (fields.TryGetPropertyValue(key, out var m))
                throw new PeftSharpException($"{where}: field \"{key}\" is {DataFiles.Kind(m)}, expected a list of messages ({{\"role\", \"content\"}}{(key == "conversations" ? " or ShareGPT's {\"from\", \"value\"}" : "")}).");
        if (fields.ContainsKey("chosen") && fields.ContainsKey("rejected")) return DatasetFormat.Preference;
        if (fields.ContainsKey("prompt") && fields.ContainsKey("completion") && fields.ContainsKey("label")) return DatasetFormat.UnpairedPreference;
        if (fields.ContainsKey("prompt") && fields.ContainsKey("completion"))
            return fields["prompt"] is JsonArray ? DatasetFormat.ConversationalPromptCompletion : DatasetFormat.PromptCompletion;
        if (fields.ContainsKey(textField)) return DatasetFormat.Text;
        throw new PeftSharpException($"{where}: cannot tell the data format: expected a \"{textField}\" field (language modelling), " +
            $"\"prompt\" and \"completion\", a \"messages\" list or ShareGPT \"conversations\" (or, for preference trainers, \"chosen\" and \"rejected\", " +
            $"or \"prompt\", \"completion\" and \"label\"); found {Keys(fields)}.");
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
        var tools = Tools(f, where);
        switch (format)
        {
            case DatasetFormat.Preference:
            case DatasetFormat.UnpairedPreference:
                throw new PeftSharpException($"{where}: this is {Describe(format)}, which trains a preference model (DPO, ORPO, KTO, a reward model), not SFT; " +
                    "SFT needs text, prompt/completion, or messages (train it with training.trainer: dpo, orpo, kto or reward).");
            case DatasetFormat.Text:
                return FromText(String(f, textField, where), where);
            case DatasetFormat.PromptCompletion:
            case DatasetFormat.ConversationalPromptCompletion:
                if (f["prompt"] is JsonArray || f["completion"] is JsonArray)
                    return new SftExample(DatasetFormat.ConversationalPromptCompletion, where)
                    {
                        PromptMessages = Messages(f, "prompt", where),
                        CompletionMessages = Messages(f, "completion", where),
                        Tools = tools,
                    };
                return SftExample.FromPromptCompletion(String(f, "prompt", where), String(f, "completion", where), where);
            default:
                return SftExample.FromMessages(Messages(f, f.ContainsKey("messages") ? "messages" : "conversations", where), where) with { Tools = tools };
        }
    }

    public static string Describe(DatasetFormat format) => format switch
    {
        DatasetFormat.Text => "language-modelling data",
        DatasetFormat.PromptCompletion => "prompt-completion data",
        DatasetFormat.Conversational => "conversational data",
        DatasetFormat.ConversationalPromptCompletion => "conversational prompt-completion data",
        DatasetFormat.Preference => "preference data (chosen/rejected)",
        _ => "unpaired preference data (prompt/completion/label)",
    };

    /// <summary>The `tools` field: a list of function schemas, or that list as a JSON string (as datasets often store it); null when absent.</summary>
    private static JsonElement? Tools(JsonObject f, string where)
    {
        if (!f.TryGetPropertyValue("tools", out var node) || node == null) return null;
        JsonNode? list = node;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String)
        {
            try { list = JsonNode.Parse(v.GetValue<string>()); }
            catch (JsonException e) { throw new PeftSharpException($"{where}: field \"tools\" is a string but not valid JSON ({e.Message}); expected a list of function schemas."); }
        }
        if (list is not JsonArray) throw new PeftSharpException($"{where}: field \"tools\" is {DataFiles.Kind(list)}, expected a list of function schemas (or that list as a JSON string).");
        return JsonSerializer.Deserialize<JsonElement>(list.ToJsonString());
    }

    /// <summary>ShareGPT's "from" values and the roles they stand for.</summary>
    private static readonly Dictionary<string, string> ShareGptRoles = new(StringComparer.OrdinalIgnoreCase)
    {
        ["system"] = "system", ["human"] = "user", ["user"] = "user", ["gpt"] = "assistant", ["assistant"] = "assistant",
        ["bot"] = "assistant", ["model"] = "assistant", ["chatgpt"] = "assistant", ["tool"] = "tool", ["function_response"] = "tool",
        ["observation"] = "tool", ["ipython"] = "ipython",
    };

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
            bool shareGpt = !m.ContainsKey("role") && m.ContainsKey("from");
            string roleKey = shareGpt ? "from" : "role", contentKey = shareGpt ? "value" : "content";
            if (m[roleKey] is not JsonValue r || r.GetValueKind() != JsonValueKind.String)
                throw new PeftSharpException($"{where}: {key}[{i}].{roleKey} is {(m.ContainsKey(roleKey) ? DataFiles.Kind(m[roleKey]) : "missing (or null)")}, expected a string.");
            string role = r.GetValue<string>();
            if (shareGpt && !ShareGptRoles.TryGetValue(role, out role!))
                throw new PeftSharpException($"{where}: {key}[{i}].from is \"{r.GetValue<string>()}\"; ShareGPT roles are {string.Join(", ", ShareGptRoles.Keys)}.");
            string? content = null;
            if (m.TryGetPropertyValue(contentKey, out var c) && c != null)
            {
                if (c is JsonValue cv && cv.GetValueKind() == JsonValueKind.String) content = cv.GetValue<string>();
                else if (c is JsonArray parts) content = TextParts(parts, $"{where}: {key}[{i}].{contentKey}");
                else throw new PeftSharpException($"{where}: {key}[{i}].{contentKey} is {DataFiles.Kind(c)}, expected a string or a list of {{\"type\": \"text\", \"text\"}} parts.");
            }
            var extra = new Dictionary<string, object?>();
            foreach (var (k, v) in m)
                if (k != roleKey && k != contentKey) extra[k] = v == null ? null : JsonSerializer.Deserialize<JsonElement>(v.ToJsonString());
            messages.Add(new ChatMessage(role, content, extra));
        }
        return messages;
    }

    /// <summary>Content given as parts: the text parts joined (as text-only chat templates print them); any other part type is refused by name.</summary>
    private static string TextParts(JsonArray parts, string where)
    {
        var sb = new System.Text.StringBuilder();
        for (int p = 0; p < parts.Count; p++)
        {
            if (parts[p] is not JsonObject part || part["type"] is not JsonValue t || t.GetValueKind() != JsonValueKind.String)
                throw new PeftSharpException($"{where}[{p}] is {DataFiles.Kind(parts[p])}, expected {{\"type\": \"text\", \"text\": ...}}.");
            if (t.GetValue<string>() != "text")
                throw new PeftSharpException($"{where}[{p}] is a \"{t.GetValue<string>()}\" part; PeftSharp trains text-only models and reads only \"text\" parts.");
            if (part["text"] is not JsonValue text || text.GetValueKind() != JsonValueKind.String)
                throw new PeftSharpException($"{where}[{p}].text is {DataFiles.Kind(part["text"])}, expected a string.");
            sb.Append(text.GetValue<string>());
        }
        return sb.ToString();
    }

    internal static List<ChatMessage> MessagesOf(JsonObject f, string key, string where) => Messages(f, key, where);

    internal static string StringOf(JsonObject f, string key, string where) => String(f, key, where);

    private static string Keys(JsonObject f) => f.Count == 0 ? "no fields" : string.Join(", ", f.Select(p => $"\"{p.Key}\""));
}
