using System.Text.Json;
using PeftSharp.Formats.ChatTemplates;

namespace PeftSharp.Models.Generation;

/// <summary>
/// The one place a chat template is chosen (training data, the CLI's generate and chat, the chat client and the server):
/// an explicit name or Jinja source wins; else the model folder's template (tokenizer_config.json's chat_template or
/// chat_template.jinja); else the built-in <c>fallback</c> when one is given, with a notice saying so.
/// </summary>
public static class ChatTemplates
{
    /// <summary>The format used when a model folder has no template and the caller allows a fallback.</summary>
    public const string DefaultFallback = "chatml";

    /// <summary>
    /// <paramref name="chatTemplate"/>: a built-in format (chatml, llama3, llama2, zephyr) or a Jinja source (it contains
    /// "{{" or "{%"). Without it, <paramref name="modelFolder"/>'s template; a folder without one gives <paramref name="fallback"/>
    /// (with <paramref name="notice"/> set) or, with no fallback, an error. Null when neither a template nor a folder is given.
    /// </summary>
    public static ChatTemplate? Resolve(string? chatTemplate, string? modelFolder, string? fallback, out string? notice)
    {
        notice = null;
        if (!string.IsNullOrEmpty(chatTemplate))
        {
            if (ChatTemplate.BuiltinNames.Contains(chatTemplate, StringComparer.OrdinalIgnoreCase)) return ChatTemplate.Builtin(chatTemplate);
            if (chatTemplate.Contains("{{") || chatTemplate.Contains("{%")) return ChatTemplate.Parse(chatTemplate);
            throw new PeftSharpException($"chat_template: '{chatTemplate}' is neither a built-in format ({string.Join(", ", ChatTemplate.BuiltinNames)}) nor a Jinja template.");
        }
        if (modelFolder == null) return null;
        string config = Path.Combine(modelFolder, "tokenizer_config.json");
        if (fallback == null || HasTemplate(modelFolder)) return ChatTemplate.FromTokenizerConfig(modelFolder);
        notice = $"({modelFolder} has no chat template; using the built-in {fallback} format)";
        return File.Exists(config) ? ChatTemplate.FromTokenizerConfig(modelFolder, fallback: fallback) : ChatTemplate.Builtin(fallback);
    }

    /// <summary><see cref="Resolve(string?, string?, string?, out string?)"/> without the notice.</summary>
    public static ChatTemplate? Resolve(string? chatTemplate, string? modelFolder, string? fallback = null) =>
        Resolve(chatTemplate, modelFolder, fallback, out _);

    /// <summary>True when the folder has a chat template of its own (tokenizer_config.json's chat_template, or chat_template.jinja).</summary>
    public static bool HasTemplate(string modelFolder)
    {
        string config = Path.Combine(modelFolder, "tokenizer_config.json");
        if (!File.Exists(config)) return false;
        if (File.Exists(Path.Combine(modelFolder, "chat_template.jinja"))) return true;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(config));
            return doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind != JsonValueKind.Null;
        }
        catch (JsonException e)
        {
            throw new PeftSharpException($"{config}: not valid JSON ({e.Message})", e);
        }
    }
}
