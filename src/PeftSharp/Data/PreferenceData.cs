using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Data;

/// <summary>TRL's preference dataset types.</summary>
public enum PreferenceFormat
{
    /// <summary>{"prompt", "chosen", "rejected"} (explicit prompt) or {"chosen", "rejected"} (implicit prompt: their shared prefix).</summary>
    Paired,
    /// <summary>{"prompt", "completion", "label": bool} (KTO's unpaired preference).</summary>
    Unpaired,
}

/// <summary>
/// One preference example as text (a conversational one already rendered by the chat template): a prompt with a chosen
/// and a rejected completion (and an optional reward margin), or a prompt with one completion labelled desirable or not.
/// </summary>
public sealed record PreferenceExample(string Where, string Prompt)
{
    public string? Chosen { get; init; }
    public string? Rejected { get; init; }
    public double? Margin { get; init; }
    public string? Completion { get; init; }
    public bool Label { get; init; }
}

/// <summary>
/// Reads TRL's preference formats from the records of <see cref="DataFiles"/> (JSONL, JSON, CSV):
/// <list type="bullet">
/// <item>explicit prompt: prompt, chosen, rejected (strings, or message lists: conversational);</item>
/// <item>implicit prompt: chosen and rejected only; the prompt is their longest shared prefix (TRL's extract_prompt: by
/// character for text, the space before the split going to the completions; by whole message for conversations);</item>
/// <item>unpaired: prompt, completion, label (true = desirable);</item>
/// <item>an optional numeric "margin" (RewardTrainer).</item>
/// </list>
/// Conversational examples are rendered as TRL's maybe_apply_chat_template renders them: the prompt with the generation
/// prompt, each completion as the rendering of prompt + completion with the prompt's text cut off the front.
/// </summary>
public static class PreferenceData
{
    public static PreferenceFormat Detect(JsonObject fields, string where)
    {
        if (fields.ContainsKey("chosen") && fields.ContainsKey("rejected")) return PreferenceFormat.Paired;
        if (fields.ContainsKey("completion") && fields.ContainsKey("label")) return PreferenceFormat.Unpaired;
        throw new PeftSharpException($"{where}: not preference data: expected \"chosen\" and \"rejected\" (with or without \"prompt\"), " +
            $"or \"prompt\", \"completion\" and \"label\"; found {string.Join(", ", fields.Select(f => $"\"{f.Key}\""))}.");
    }

    /// <summary>Reads a file (or folder of files DataFiles reads) and converts every record.</summary>
    public static List<PreferenceExample> Load(string path, ChatTemplate? template, bool skipMalformed, List<MalformedRecord> skipped, PreferenceFormat? expected = null) =>
        Load(DataFiles.Read(path, "text", PlainTextMode.Lines, skipMalformed, skipped), path, template, skipMalformed, skipped, expected);

    /// <summary>Converts records of any source (files of a dataset folder's split, streamed) into preference examples; <paramref name="what"/> names them in errors.</summary>
    public static List<PreferenceExample> Load(IEnumerable<DataRecord> records, string what, ChatTemplate? template, bool skipMalformed,
        List<MalformedRecord> skipped, PreferenceFormat? expected = null)
    {
        var examples = new List<PreferenceExample>();
        foreach (var r in records)
        {
            try
            {
                var e = Convert(r, template);
                var format = e.Completion != null ? PreferenceFormat.Unpaired : PreferenceFormat.Paired;
                if (expected != null && format != expected)
                    throw new PeftSharpException($"{r.Where}: this trainer needs {(expected == PreferenceFormat.Paired ? "paired (chosen/rejected)" : "unpaired (prompt/completion/label)")} data.");
                examples.Add(e);
            }
            catch (PeftSharpException e) when (skipMalformed)
            {
                string prefix = r.Where + ": ";
                skipped.Add(new MalformedRecord(r.File, r.Line, e.Message.StartsWith(prefix, StringComparison.Ordinal) ? e.Message[prefix.Length..] : e.Message));
            }
        }
        if (examples.Count == 0) throw new PeftSharpException($"{what}: no preference examples.");
        return examples;
    }

    public static PreferenceExample Convert(DataRecord record, ChatTemplate? template)
    {
        var f = record.Fields;
        string where = record.Where;
        double? margin = null;
        if (f["margin"] is JsonValue m)
            margin = m.GetValueKind() == JsonValueKind.Number ? m.GetValue<double>() : throw new PeftSharpException($"{where}: \"margin\" must be a number.");
        if (Detect(f, where) == PreferenceFormat.Unpaired)
        {
            bool label = f["label"] is JsonValue l && l.GetValueKind() is JsonValueKind.True or JsonValueKind.False
                ? l.GetValue<bool>() : throw new PeftSharpException($"{where}: \"label\" must be true or false.");
            if (f["prompt"] is JsonArray || f["completion"] is JsonArray)
            {
                var promptMessages = Messages(f, "prompt", where);
                var t = Template(template, where);
                string prompt = Render(t, promptMessages, true, where);
                string whole = Render(t, [.. promptMessages, .. Messages(f, "completion", where)], false, where);
                return new PreferenceExample(where, prompt) { Completion = Suffix(whole, prompt, where), Label = label };
            }
            return new PreferenceExample(where, String(f, "prompt", where)) { Completion = String(f, "completion", where), Label = label };
        }
        bool conversational = f["chosen"] is JsonArray || f["rejected"] is JsonArray || f["prompt"] is JsonArray;
        if (!conversational)
        {
            string chosen = String(f, "chosen", where), rejected = String(f, "rejected", where);
            if (f.ContainsKey("prompt"))
                return new PreferenceExample(where, String(f, "prompt", where)) { Chosen = chosen, Rejected = rejected, Margin = margin };
            var (p, c, r) = ExtractPrompt(chosen, rejected);
            return new PreferenceExample(where, p) { Chosen = c, Rejected = r, Margin = margin };
        }
        var chosenMessages = Messages(f, "chosen", where);
        var rejectedMessages = Messages(f, "rejected", where);
        List<ChatMessage> promptList;
        if (f.ContainsKey("prompt")) promptList = Messages(f, "prompt", where);
        else
        {
            int k = 0;
            while (k < chosenMessages.Count && k < rejectedMessages.Count && SameMessage(chosenMessages[k], rejectedMessages[k])) k++;
            promptList = chosenMessages[..k];
            chosenMessages = chosenMessages[k..];
            rejectedMessages = rejectedMessages[k..];
        }
        var template1 = Template(template, where);
        string promptText = Render(template1, promptList, true, where);
        return new PreferenceExample(where, promptText)
        {
            Chosen = Suffix(Render(template1, [.. promptList, .. chosenMessages], false, where), promptText, where),
            Rejected = Suffix(Render(template1, [.. promptList, .. rejectedMessages], false, where), promptText, where),
            Margin = margin,
        };
    }

    /// <summary>
    /// TRL's extract_prompt for text: the longest common prefix of chosen and rejected is the prompt; when the first
    /// differing character follows a space, the space goes to the completions.
    /// </summary>
    public static (string Prompt, string Chosen, string Rejected) ExtractPrompt(string chosen, string rejected)
    {
        int n = Math.Min(chosen.Length, rejected.Length), idx = 0;
        while (idx < n && chosen[idx] == rejected[idx]) idx++;
        if (idx < n && idx > 0 && chosen[idx - 1] == ' ') idx--;
        return (chosen[..idx], chosen[idx..], rejected[idx..]);
    }

    private static bool SameMessage(ChatMessage a, ChatMessage b) => a.Role == b.Role && a.Content == b.Content;

    private static string Suffix(string whole, string prompt, string where) => whole.StartsWith(prompt, StringComparison.Ordinal)
        ? whole[prompt.Length..]
        : throw new PeftSharpException($"{where}: the chat template renders the prompt differently alone and before a completion; cannot split the completion off.");

    private static ChatTemplate Template(ChatTemplate? t, string where) =>
        t ?? throw new PeftSharpException($"{where}: conversational data needs a chat template (the tokenizer's, or data.chat_template).");

    private static string Render(ChatTemplate template, IReadOnlyList<ChatMessage> messages, bool generationPrompt, string where)
    {
        try { return template.Render(messages, generationPrompt); }
        catch (ChatTemplateException e) { throw new PeftSharpException($"{where}: chat template failed: {e.Message}", e); }
    }

    private static string String(JsonObject f, string key, string where)
    {
        if (!f.TryGetPropertyValue(key, out var node)) throw new PeftSharpException($"{where}: missing field \"{key}\".");
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String) return v.GetValue<string>();
        throw new PeftSharpException($"{where}: field \"{key}\" is {DataFiles.Kind(node)}, expected a string.");
    }

    private static List<ChatMessage> Messages(JsonObject f, string key, string where)
    {
        if (f[key] is not JsonArray array) throw new PeftSharpException($"{where}: field \"{key}\" is {DataFiles.Kind(f[key])}, expected a list of messages.");
        var list = new List<ChatMessage>(array.Count);
        for (int i = 0; i < array.Count; i++)
        {
            if (array[i] is not JsonObject m || m["role"] is not JsonValue role || role.GetValueKind() != JsonValueKind.String)
                throw new PeftSharpException($"{where}: {key}[{i}] must be {{\"role\": ..., \"content\": ...}}.");
            string? content = m["content"] is JsonValue c && c.GetValueKind() == JsonValueKind.String ? c.GetValue<string>() : null;
            list.Add(new ChatMessage(role.GetValue<string>(), content, new Dictionary<string, object?>()));
        }
        return list;
    }
}
