using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;

namespace PeftSharp.Formats.ChatTemplates;

/// <summary>A character range of rendered text: <c>text.Substring(Start, Length)</c>.</summary>
public readonly record struct TextSpan(int Start, int Length)
{
    public int End => Start + Length;
}

/// <summary>
/// The rendered conversation and where each assistant turn's content lies in it. With
/// <see cref="FromGenerationBlocks"/> the spans are the template's <c>{% generation %}</c> bodies;
/// otherwise each is one assistant message's content as printed (see <see cref="ChatTemplate.RenderWithSpans"/>).
/// </summary>
public sealed record ChatRenderResult(string Text, IReadOnlyList<TextSpan> AssistantSpans, bool FromGenerationBlocks);

/// <summary>
/// A Hugging Face chat template (the Jinja2 <c>chat_template</c> of tokenizer_config.json) rendered
/// exactly as transformers' <c>apply_chat_template</c> renders it: Jinja2 with trim_blocks,
/// lstrip_blocks and loop controls, transformers' <c>tojson</c>, <c>raise_exception</c> and
/// <c>strftime_now</c>, and the tokenizer's special tokens (bos_token, eos_token...) as variables.
/// Variables passed to <see cref="Render"/>: <c>messages</c>, <c>add_generation_prompt</c>,
/// <c>tools</c> and <c>documents</c> (None), the special tokens, then <c>extra</c> (which wins).
/// </summary>
public sealed class ChatTemplate
{
    private static readonly ConcurrentDictionary<string, List<Node>> Cache = new(StringComparer.Ordinal);

    private readonly List<Node> _ast;

    private ChatTemplate(string source, List<Node> ast, IReadOnlyDictionary<string, object?> variables)
    {
        Source = source;
        _ast = ast;
        Variables = variables;
        HasGenerationBlocks = ContainsGeneration(ast);
    }

    /// <summary>The Jinja2 source.</summary>
    public string Source { get; }

    /// <summary>Template variables every render gets (the special tokens from the tokenizer config).</summary>
    public IReadOnlyDictionary<string, object?> Variables { get; }

    /// <summary>True when the template marks assistant text with <c>{% generation %}</c> blocks.</summary>
    public bool HasGenerationBlocks { get; }

    /// <summary>The time <c>strftime_now</c> formats; null means the current local time.</summary>
    public DateTime? Now { get; private init; }

    /// <summary>The same template with <c>strftime_now</c> fixed to <paramref name="now"/> (for reproducible renders).</summary>
    public ChatTemplate WithNow(DateTime now) => new(Source, _ast, Variables) { Now = now, SourceFile = SourceFile };

    /// <summary>The file the template was read from (named in render errors), or null.</summary>
    public string? SourceFile { get; private init; }

    /// <summary>Parses (or takes from the cache) a template. Syntax errors throw <see cref="ChatTemplateException"/> naming the line.</summary>
    public static ChatTemplate Parse(string source, IReadOnlyDictionary<string, object?>? variables = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        var ast = Cache.GetOrAdd(source, TemplateParser.Parse);
        return new ChatTemplate(source, ast, variables ?? new Dictionary<string, object?>());
    }

    /// <summary>The names <see cref="Builtin"/> accepts: chatml, llama3, llama2, zephyr.</summary>
    public static IReadOnlyList<string> BuiltinNames => BuiltinChatTemplates.Names;

    /// <summary>A built-in format for model folders without a template, with that format's usual special tokens as defaults.</summary>
    public static ChatTemplate Builtin(string name, IReadOnlyDictionary<string, object?>? variables = null)
    {
        var (source, defaults) = BuiltinChatTemplates.Get(name);
        var merged = new Dictionary<string, object?>(defaults, StringComparer.Ordinal);
        if (variables != null) foreach (var (k, v) in variables) merged[k] = v;
        return Parse(source, merged);
    }

    /// <summary>
    /// Reads <c>chat_template</c> from a tokenizer_config.json (a file, or a folder holding one; a
    /// folder's chat_template.jinja is used when the config has none). A list of {name, template}
    /// picks <paramref name="templateName"/> ("default"). bos/eos/unk/pad/cls/sep/mask tokens that
    /// are set (a string or {"content": ...}) and additional_special_tokens become variables, as in
    /// transformers' special_tokens_map (unset tokens stay undefined). With no template,
    /// <paramref name="fallback"/> names a built-in format; without one that is an error.
    /// </summary>
    public static ChatTemplate FromTokenizerConfig(string path, string? fallback = null, string templateName = "default")
    {
        string folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
        string file = Directory.Exists(path) ? Path.Combine(path, "tokenizer_config.json") : path;
        if (!File.Exists(file)) throw new PeftSharpException($"{file}: file not found (expected a tokenizer_config.json or a folder holding one)");
        using (var doc = JsonInput.ParseDocumentFile(file))
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new PeftSharpException($"{file}: expected a JSON object");
            var variables = SpecialTokens(root, file);
            string? source = null;
            if (root.TryGetProperty("chat_template", out var tpl))
                source = tpl.ValueKind switch
                {
                    JsonValueKind.String => tpl.GetString(),
                    JsonValueKind.Array => PickNamed(tpl, templateName, file),
                    JsonValueKind.Null => null,
                    _ => throw new PeftSharpException($"{file}: 'chat_template' must be a string or a list of {{\"name\", \"template\"}} objects"),
                };
            string jinjaFile = Path.Combine(folder, "chat_template.jinja");
            if (source == null && File.Exists(jinjaFile)) source = File.ReadAllText(jinjaFile, Encoding.UTF8);
            if (source != null)
            {
                ChatTemplate parsed;
                try { parsed = Parse(source, variables); }
                catch (ChatTemplateException e) { throw new ChatTemplateException($"{file}: {e.Message}", e.Line); }
                return new ChatTemplate(parsed.Source, parsed._ast, parsed.Variables) { SourceFile = file };
            }
            if (fallback != null) return Builtin(fallback, variables);
            throw new PeftSharpException($"{file}: has no 'chat_template'; choose a built-in format ({string.Join(", ", BuiltinNames)})");
        }
    }

    private static string PickNamed(JsonElement list, string name, string file)
    {
        var names = new List<string>();
        foreach (var item in list.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Object || !item.TryGetProperty("name", out var n) || !item.TryGetProperty("template", out var t)
                || n.ValueKind != JsonValueKind.String || t.ValueKind != JsonValueKind.String)
                throw new PeftSharpException($"{file}: each 'chat_template' entry must be {{\"name\": string, \"template\": string}}");
            if (n.GetString() == name) return t.GetString()!;
            names.Add(n.GetString()!);
        }
        throw new PeftSharpException($"{file}: no chat template named '{name}' (has: {string.Join(", ", names)})");
    }

    private static Dictionary<string, object?> SpecialTokens(JsonElement root, string file)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var key in (string[])["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"])
        {
            if (!root.TryGetProperty(key, out var v)) continue;
            var token = TokenContent(v, file, key);
            if (!string.IsNullOrEmpty(token)) vars[key] = token;
        }
        if (root.TryGetProperty("additional_special_tokens", out var extra) && extra.ValueKind == JsonValueKind.Array && extra.GetArrayLength() > 0)
            vars["additional_special_tokens"] = extra.EnumerateArray().Select(e => (object?)TokenContent(e, file, "additional_special_tokens")).ToList();
        return vars;
    }

    private static string? TokenContent(JsonElement v, string file, string key) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Null => null,
        JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => throw new PeftSharpException($"{file}: '{key}' must be a string or an object with a string \"content\""),
    };

    /// <summary>Renders the conversation. A template's raise_exception throws <see cref="ChatTemplateException"/> with its message.</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, IDictionary<string, object?>? extra = null) =>
        RenderCore(messages, addGenerationPrompt, extra).Text;

    private (string Text, List<(int Start, int End)> GenerationSpans) RenderCore(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, IDictionary<string, object?>? extra)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = messages.Select(m => (object?)m.ToTemplateValue()).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
        };
        foreach (var (k, v) in Variables) vars[k] = v;
        if (extra != null) foreach (var (k, v) in extra) vars[k] = v;
        try { return TemplateInterpreter.Render(_ast, vars, Now ?? DateTime.Now); }
        catch (ChatTemplateException e) when (SourceFile != null && !e.FromTemplate)
        {
            throw new ChatTemplateException($"{SourceFile}: {e.Message}", e.Line);
        }
    }

    /// <summary>
    /// Renders and reports where each assistant message's content lies in the text.
    /// With <c>{% generation %}</c> blocks in the template those blocks' bodies are the spans.
    /// Otherwise the template is rendered a second time with each non-empty assistant content replaced
    /// by a unique private-use placeholder; the text around the placeholders must match the real
    /// rendering, which pins each content exactly (as printed, or trimmed where the template trims it)
    /// even when the same words occur elsewhere. When a template transforms the content beyond
    /// trimming (so the two renderings cannot be aligned), each content is searched for in order
    /// after the previous span, and a content that is not found gets no span.
    /// </summary>
    public ChatRenderResult RenderWithSpans(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt, IDictionary<string, object?>? extra = null)
    {
        var (text, generation) = RenderCore(messages, addGenerationPrompt, extra);
        if (HasGenerationBlocks)
            return new ChatRenderResult(text, generation.Select(g => new TextSpan(g.Start, g.End - g.Start)).ToList(), true);

        var contents = messages.Where(m => m.Role == "assistant" && !string.IsNullOrEmpty(m.Content)).Select(m => m.Content!).ToList();
        if (contents.Count == 0) return new ChatRenderResult(text, [], false);
        int next = 0;
        var marked = messages.Select(m => m.Role == "assistant" && !string.IsNullOrEmpty(m.Content) ? m.WithContent(Placeholder(next++)) : m).ToList();
        string? placeholderText = null;
        try { placeholderText = RenderCore(marked, addGenerationPrompt, extra).Text; }
        catch (ChatTemplateException) { }
        var spans = placeholderText != null ? Align(text, placeholderText, contents) : null;
        return new ChatRenderResult(text, spans ?? SearchInOrder(text, contents), false);
    }

    private static string Placeholder(int i) => $"\uE000{i}\uE001";

    private static List<TextSpan>? Align(string text, string marked, List<string> contents)
    {
        var spans = new List<TextSpan>();
        int cursor = 0, pos = 0;
        for (int i = 0; i < contents.Count; i++)
        {
            string ph = Placeholder(i);
            int at = marked.IndexOf(ph, pos, StringComparison.Ordinal);
            if (at < 0 || marked.IndexOf(ph, at + ph.Length, StringComparison.Ordinal) >= 0) return null;
            if (string.CompareOrdinal(text, cursor, marked, pos, at - pos) != 0 || text.Length - cursor < at - pos) return null;
            cursor += at - pos;
            pos = at + ph.Length;
            int nextAt = i + 1 < contents.Count ? marked.IndexOf(Placeholder(i + 1), pos, StringComparison.Ordinal) : marked.Length;
            if (nextAt < 0) return null;
            int followLength = nextAt - pos;
            string c = contents[i];
            string? chosen = null;
            foreach (var candidate in (string[])[c, c.Trim(), c.TrimStart(), c.TrimEnd()])
            {
                if (cursor + candidate.Length + followLength > text.Length) continue;
                if (string.CompareOrdinal(text, cursor, candidate, 0, candidate.Length) != 0) continue;
                if (string.CompareOrdinal(text, cursor + candidate.Length, marked, pos, followLength) != 0) continue;
                chosen = candidate;
                break;
            }
            if (chosen == null) return null;
            spans.Add(new TextSpan(cursor, chosen.Length));
            cursor += chosen.Length;
        }
        return text.Length - cursor == marked.Length - pos && string.CompareOrdinal(text, cursor, marked, pos, marked.Length - pos) == 0 ? spans : null;
    }

    private static List<TextSpan> SearchInOrder(string text, List<string> contents)
    {
        var spans = new List<TextSpan>();
        int cursor = 0;
        foreach (var c in contents)
        {
            foreach (var candidate in (string[])[c, c.Trim()])
            {
                if (candidate.Length == 0) continue;
                int at = text.IndexOf(candidate, cursor, StringComparison.Ordinal);
                if (at < 0) continue;
                spans.Add(new TextSpan(at, candidate.Length));
                cursor = at + candidate.Length;
                break;
            }
        }
        return spans;
    }

    private static bool ContainsGeneration(List<Node> nodes) => nodes.Any(n => n switch
    {
        GenerationNode => true,
        IfNode i => i.Branches.Any(b => ContainsGeneration(b.Body)) || (i.Else != null && ContainsGeneration(i.Else)),
        ForNode f => ContainsGeneration(f.Body) || (f.Else != null && ContainsGeneration(f.Else)),
        SetBlockNode s => ContainsGeneration(s.Body),
        MacroNode m => ContainsGeneration(m.Body),
        FilterBlockNode fb => ContainsGeneration(fb.Body),
        _ => false,
    });
}
