using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Models.Generation;

/// <summary>Turns text or a conversation into prompt token ids, the same way for the CLI, the chat client and the server.</summary>
public static class Prompts
{
    /// <summary>
    /// A plain-text prompt with the tokenizer's special tokens (bos); an empty prompt starts from the bos token (else eos).
    /// </summary>
    public static int[] EncodeText(Tokenizer tokenizer, string prompt)
    {
        var ids = tokenizer.Encode(prompt);
        if (ids.Length > 0) return ids;
        return tokenizer.BosTokenId is int bos ? [bos]
            : tokenizer.EosTokenId is int eos ? [eos]
            : throw new PeftSharpException("the prompt is empty and the tokenizer has no bos or eos token to start from; give some text.");
    }

    /// <summary>The conversation rendered with <paramref name="template"/> and the generation prompt, encoded without adding special tokens (the template has them).</summary>
    public static int[] EncodeChat(Tokenizer tokenizer, ChatTemplate template, IReadOnlyList<ChatMessage> messages)
    {
        if (messages.Count == 0) throw new PeftSharpException("a chat prompt needs at least one message.");
        return tokenizer.Encode(template.Render(messages, addGenerationPrompt: true), addSpecialTokens: false);
    }

    /// <summary>Loads the tokenizer of a model folder (tokenizer.json, or vocab.json + merges.txt), saying what is missing otherwise.</summary>
    public static Tokenizer LoadTokenizer(string folder, string? hint = null)
    {
        bool hasTokenizer = File.Exists(Path.Combine(folder, "tokenizer.json"))
            || (File.Exists(Path.Combine(folder, "vocab.json")) && File.Exists(Path.Combine(folder, "merges.txt")));
        if (!hasTokenizer)
            throw new PeftSharpException($"{folder}: no tokenizer (tokenizer.json, or vocab.json + merges.txt){(hint == null ? "" : "; " + hint)}.");
        return Tokenizer.FromFolder(folder);
    }
}
