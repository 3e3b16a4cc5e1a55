using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Data;

/// <summary>Token ids of one example and which of them count in the loss.</summary>
public sealed record TokenizedExample(int[] InputIds, bool[] InLoss)
{
    public int Length => InputIds.Length;
}

/// <summary>The tokenization options of TRL's SFTConfig that shape one example.</summary>
public sealed record SftTokenizationOptions
{
    public int MaxLength { get; init; } = 1024;
    /// <summary>null: on for prompt-completion data (TRL's default).</summary>
    public bool? CompletionOnlyLoss { get; init; }
    public bool AssistantOnlyLoss { get; init; }
    /// <summary>Cut a long text into max_length chunks instead of truncating it (a whole plain-text file).</summary>
    public bool ChunkLongText { get; init; }
    /// <summary>The id appended to text and completions (SFTConfig.eos_token); null: the tokenizer's eos token.</summary>
    public int? EosTokenId { get; init; }
}

/// <summary>
/// Turns examples into token ids and loss masks as TRL's SFTTrainer does:
/// <list type="bullet">
/// <item>text: <c>Encode(text)</c> with the tokenizer's special tokens, EOS appended when the ids do not already end with it; every token in the loss;</item>
/// <item>prompt-completion: ids of <c>prompt</c> and of <c>prompt + completion</c> (plus EOS); with completion_only_loss only the tokens after the first len(prompt ids) count (TRL's completion_mask, also when a token merges across the boundary);</item>
/// <item>conversational: the chat template's rendering, encoded without extra special tokens (the template writes them); with assistant_only_loss only assistant spans count;</item>
/// <item>conversational prompt-completion: the prompt rendered with the generation prompt, then the whole conversation; the tokens after the prompt's are the completion.</item>
/// </list>
/// Then truncation to max_length (the first tokens are kept, so a truncated example loses its EOS, as in TRL).
/// <para>
/// Assistant spans (character ranges from <see cref="ChatTemplate.RenderWithSpans"/>) are mapped to tokens
/// by encoding prefixes: the boundary at character c is the number of leading ids that
/// <c>Encode(text[..c])</c> shares with the ids of the whole text. A token that straddles a span edge
/// counts as assistant (as transformers' char_to_token marks every token holding a span character).
/// </para>
/// </summary>
public sealed class SftTokenization(Tokenizer tokenizer, ChatTemplate? chatTemplate, SftTokenizationOptions options)
{
    public Tokenizer Tokenizer { get; } = tokenizer;
    public ChatTemplate? ChatTemplate { get; } = chatTemplate;
    public SftTokenizationOptions Options { get; } = options;

    /// <summary>The id used for padding: the tokenizer's pad token, else EOS (labels come from masks, never from "id == pad"), else 0.</summary>
    public int PadId => Tokenizer.PadTokenId ?? Tokenizer.EosTokenId ?? 0;

    private int _truncated;

    /// <summary>How many examples <see cref="Tokenize"/> has cut to max_length so far.</summary>
    public int Truncated => _truncated;

    /// <summary>One example, or several max_length chunks of a long text when <see cref="SftTokenizationOptions.ChunkLongText"/>.</summary>
    public IEnumerable<TokenizedExample> Tokenize(SftExample example)
    {
        var full = TokenizeFull(example);
        int max = Options.MaxLength;
        if (full.Length <= max) { yield return full; yield break; }
        if (!(Options.ChunkLongText && example.Format == DatasetFormat.Text))
        {
            Interlocked.Increment(ref _truncated);
            yield return new TokenizedExample(full.InputIds[..max], full.InLoss[..max]);
            yield break;
        }
        for (int start = 0; start < full.Length; start += max)
        {
            int end = Math.Min(full.Length, start + max);
            if (end - start >= 2) yield return new TokenizedExample(full.InputIds[start..end], full.InLoss[start..end]);
        }
    }

    /// <summary>The ids and loss mask before truncation.</summary>
    public TokenizedExample TokenizeFull(SftExample example)
    {
        switch (example.Format)
        {
            case DatasetFormat.Text:
            {
                var ids = AppendEos(Tokenizer.Encode(example.Text!, addSpecialTokens: true));
                return new TokenizedExample(ids, Filled(ids.Length, true));
            }
            case DatasetFormat.PromptCompletion:
            {
                var promptIds = Tokenizer.Encode(example.Prompt!, addSpecialTokens: true);
                var ids = AppendEos(Tokenizer.Encode(example.Prompt + example.Completion, addSpecialTokens: true));
                return PromptMasked(ids, promptIds.Length);
            }
            case DatasetFormat.ConversationalPromptCompletion:
            {
                var template = RequireTemplate(example);
                string prompt = Render(template, example.PromptMessages!, true, example);
                string whole = Render(template, [.. example.PromptMessages!, .. example.CompletionMessages!], false, example);
                var promptIds = Tokenizer.Encode(prompt, addSpecialTokens: false);
                var ids = Tokenizer.Encode(whole, addSpecialTokens: false);
                return PromptMasked(ids, promptIds.Length);
            }
            default:
            {
                var template = RequireTemplate(example);
                if (!Options.AssistantOnlyLoss)
                {
                    var ids = Tokenizer.Encode(Render(template, example.Messages!, false, example), addSpecialTokens: false);
                    return new TokenizedExample(ids, Filled(ids.Length, true));
                }
                ChatRenderResult rendered;
                try { rendered = template.RenderWithSpans(example.Messages!, addGenerationPrompt: false, Extra(example)); }
                catch (ChatTemplateException e) { throw new PeftSharpException($"{example.Where}: chat template failed: {e.Message}", e); }
                var all = Tokenizer.Encode(rendered.Text, addSpecialTokens: false);
                var mask = new bool[all.Length];
                foreach (var span in rendered.AssistantSpans)
                {
                    if (span.Length == 0) continue;
                    int first = TokenBoundary(rendered.Text, span.Start, all, straddleCounts: false);
                    // A span is the message content; the end-of-turn token the template writes after it is trained too, so the
                    // model learns to stop (TRL's training templates put it inside {% generation %}, where the span already has it).
                    int spanEnd = rendered.FromGenerationBlocks ? span.End : EndOfTurn(rendered.Text, span.End);
                    int end = TokenBoundary(rendered.Text, spanEnd, all, straddleCounts: true);
                    for (int t = first; t < end; t++) mask[t] = true;
                }
                return new TokenizedExample(all, mask);
            }
        }
    }

    /// <summary>
    /// The token index at character <paramref name="c"/>: the ids shared by Encode(text[..c]) and the whole
    /// text's ids. When a token straddles c, <paramref name="straddleCounts"/> puts it before the boundary.
    /// </summary>
    private int TokenBoundary(string text, int c, int[] all, bool straddleCounts)
    {
        if (c >= text.Length) return all.Length;
        var prefix = Tokenizer.Encode(text[..c], addSpecialTokens: false);
        int shared = SharedPrefix(prefix, all);
        return shared == prefix.Length || !straddleCounts ? shared : Math.Min(all.Length, shared + 1);
    }

    private ChatTemplate RequireTemplate(SftExample example) => ChatTemplate
        ?? throw new PeftSharpException($"{example.Where}: conversational data needs a chat template (the tokenizer's, or data.chat_template).");

    /// <summary>
    /// The end of the end-of-turn token after an assistant content ending at <paramref name="end"/>: the first special token
    /// (an added token marked special, or EOS) that follows after nothing but spaces or tabs (chatml's &lt;|im_end|&gt;, Llama 3's
    /// &lt;|eot_id|&gt;, Llama 2's " &lt;/s&gt;", Zephyr's &lt;/s&gt;); <paramref name="end"/> itself when none does.
    /// </summary>
    internal int EndOfTurn(string text, int end)
    {
        int p = end;
        while (p < text.Length && text[p] is ' ' or '\t') p++;
        if (p >= text.Length) return end;
        int best = -1;
        foreach (var token in SpecialTokenStrings)
            if (token.Length > best && string.CompareOrdinal(text, p, token, 0, token.Length) == 0) best = token.Length;
        return best > 0 ? p + best : end;
    }

    private string[]? _specialTokenStrings;

    private string[] SpecialTokenStrings => _specialTokenStrings ??= Tokenizer.AddedTokens.Where(t => t.Special).Select(t => t.Content)
        .Append(Tokenizer.EosToken).Where(t => !string.IsNullOrEmpty(t)).Distinct().ToArray()!;

    /// <summary>The record's tools for the template (as `tools`), or null.</summary>
    private static Dictionary<string, object?>? Extra(SftExample example) =>
        example.Tools is { } tools ? new Dictionary<string, object?> { ["tools"] = Formats.ChatTemplates.Py.FromNet(tools) } : null;

    private static string Render(ChatTemplate template, IReadOnlyList<ChatMessage> messages, bool generationPrompt, SftExample example)
    {
        try { return template.Render(messages, generationPrompt, Extra(example)); }
        catch (ChatTemplateException e) { throw new PeftSharpException($"{example.Where}: chat template failed: {e.Message}", e); }
    }

    private TokenizedExample PromptMasked(int[] ids, int promptLength)
    {
        bool completionOnly = Options.CompletionOnlyLoss ?? true;
        var mask = new bool[ids.Length];
        for (int i = 0; i < ids.Length; i++) mask[i] = !completionOnly || i >= promptLength;
        return new TokenizedExample(ids, mask);
    }

    private int[] AppendEos(int[] ids)
    {
        if ((Options.EosTokenId ?? Tokenizer.EosTokenId) is not int eos || (ids.Length > 0 && ids[^1] == eos)) return ids;
        return [.. ids, eos];
    }

    private static int SharedPrefix(int[] a, int[] b)
    {
        int n = Math.Min(a.Length, b.Length), i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }

    private static bool[] Filled(int n, bool value)
    {
        var m = new bool[n];
        if (value) Array.Fill(m, true);
        return m;
    }
}
