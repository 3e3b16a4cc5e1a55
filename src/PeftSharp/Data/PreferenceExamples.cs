using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Data;

/// <summary>
/// One paired preference example (TRL's preference type, for DPO, ORPO and reward modelling): a prompt with a chosen
/// and a rejected answer. Standard: strings; conversational: message lists. With an implicit prompt
/// (<see cref="ImplicitPrompt"/>) chosen and rejected are whole conversations that share their opening turns.
/// </summary>
public sealed record PreferenceExample(string Where, bool Conversational, bool ImplicitPrompt)
{
    public string? Prompt { get; init; }
    public string? Chosen { get; init; }
    public string? Rejected { get; init; }
    public IReadOnlyList<ChatMessage>? PromptMessages { get; init; }
    public IReadOnlyList<ChatMessage>? ChosenMessages { get; init; }
    public IReadOnlyList<ChatMessage>? RejectedMessages { get; init; }
}

/// <summary>One unpaired preference example (TRL's unpaired preference type, for KTO/BCO): a completion labelled good (true) or bad.</summary>
public sealed record UnpairedPreferenceExample(string Where, bool Conversational, bool Label)
{
    public string? Prompt { get; init; }
    public string? Completion { get; init; }
    public IReadOnlyList<ChatMessage>? PromptMessages { get; init; }
    public IReadOnlyList<ChatMessage>? CompletionMessages { get; init; }
}

/// <summary>Reads TRL's preference formats from records of any file type, naming the file, row and field when one does not fit.</summary>
public static class PreferenceExamples
{
    public static List<PreferenceExample> ReadPaired(IEnumerable<DataRecord> records)
    {
        var result = new List<PreferenceExample>();
        foreach (var r in records)
        {
            var f = r.Fields;
            string where = r.Where;
            if (!f.ContainsKey("chosen") || !f.ContainsKey("rejected"))
                throw new PeftSharpException($"{where}: preference data needs \"chosen\" and \"rejected\" (and optionally \"prompt\"); found {string.Join(", ", f.Select(p => $"\"{p.Key}\""))}.");
            bool implicitPrompt = !f.ContainsKey("prompt");
            bool conversational = f["chosen"] is JsonArray;
            result.Add(conversational
                ? new PreferenceExample(where, true, implicitPrompt)
                {
                    PromptMessages = implicitPrompt ? null : SftExamples.MessagesOf(f, "prompt", where),
                    ChosenMessages = SftExamples.MessagesOf(f, "chosen", where),
                    RejectedMessages = SftExamples.MessagesOf(f, "rejected", where),
                }
                : new PreferenceExample(where, false, implicitPrompt)
                {
                    Prompt = implicitPrompt ? null : SftExamples.StringOf(f, "prompt", where),
                    Chosen = SftExamples.StringOf(f, "chosen", where),
                    Rejected = SftExamples.StringOf(f, "rejected", where),
                });
        }
        return result;
    }

    public static List<UnpairedPreferenceExample> ReadUnpaired(IEnumerable<DataRecord> records)
    {
        var result = new List<UnpairedPreferenceExample>();
        foreach (var r in records)
        {
            var f = r.Fields;
            string where = r.Where;
            if (f["label"] is not JsonValue label || label.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
                throw new PeftSharpException($"{where}: field \"label\" is {(f.ContainsKey("label") ? DataFiles.Kind(f["label"]) : "missing")}, expected true (desirable) or false.");
            bool conversational = f["completion"] is JsonArray;
            result.Add(conversational
                ? new UnpairedPreferenceExample(where, true, label.GetValue<bool>())
                {
                    PromptMessages = SftExamples.MessagesOf(f, "prompt", where),
                    CompletionMessages = SftExamples.MessagesOf(f, "completion", where),
                }
                : new UnpairedPreferenceExample(where, false, label.GetValue<bool>())
                {
                    Prompt = SftExamples.StringOf(f, "prompt", where),
                    Completion = SftExamples.StringOf(f, "completion", where),
                });
        }
        return result;
    }
}
