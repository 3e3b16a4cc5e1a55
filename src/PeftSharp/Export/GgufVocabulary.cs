using System.Text.Json;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Export;

/// <summary>
/// The tokenizer as llama.cpp reads it from GGUF metadata (tokenizer.ggml.*), built from a Hugging Face
/// tokenizer.json: byte-level BPE becomes <c>gpt2</c> with its merges and the pre-tokenizer name llama.cpp knows
/// (gpt-2, llama-bpe or qwen2, told apart by the split regex); a SentencePiece-style BPE (▁ for spaces, byte
/// fallback) becomes <c>llama</c> with scores (higher merges first) and token types (byte tokens typed as bytes).
/// Special added tokens are control tokens, other added tokens user-defined; ids missing from the file up to the
/// model's vocab_size are padding tokens [PAD{id}] typed unused, as convert_hf_to_gguf.py writes them.
/// </summary>
public sealed class GgufVocabulary
{
    /// <summary>llama.cpp's token types (llama_token_type).</summary>
    public const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    public required string Model { get; init; }
    public string? PreTokenizer { get; init; }
    public required string[] Tokens { get; init; }
    public required int[] TokenTypes { get; init; }
    public float[]? Scores { get; init; }
    public string[]? Merges { get; init; }
    public int? BosId { get; init; }
    public int? EosId { get; init; }
    public int? UnkId { get; init; }
    public int? PadId { get; init; }
    public bool AddBos { get; init; }
    public bool AddEos { get; init; }
    public string? ChatTemplate { get; init; }

    public void AddTo(GgufWriter writer)
    {
        writer.Add("tokenizer.ggml.model", Model);
        if (PreTokenizer != null) writer.Add("tokenizer.ggml.pre", PreTokenizer);
        writer.Add("tokenizer.ggml.tokens", GgufValue.Array(Tokens));
        if (Scores != null) writer.Add("tokenizer.ggml.scores", GgufValue.Array(Scores));
        writer.Add("tokenizer.ggml.token_type", GgufValue.Array(TokenTypes));
        if (Merges != null) writer.Add("tokenizer.ggml.merges", GgufValue.Array(Merges));
        if (BosId is int bos) writer.Add("tokenizer.ggml.bos_token_id", (uint)bos);
        if (EosId is int eos) writer.Add("tokenizer.ggml.eos_token_id", (uint)eos);
        if (UnkId is int unk) writer.Add("tokenizer.ggml.unknown_token_id", (uint)unk);
        if (PadId is int pad) writer.Add("tokenizer.ggml.padding_token_id", (uint)pad);
        writer.Add("tokenizer.ggml.add_bos_token", AddBos);
        writer.Add("tokenizer.ggml.add_eos_token", AddEos);
        if (ChatTemplate != null) writer.Add("tokenizer.chat_template", ChatTemplate);
    }

    /// <summary>
    /// A stand-in vocabulary for a model folder without a tokenizer (llama.cpp refuses a model without one):
    /// SentencePiece-style &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, the 256 byte tokens &lt;0x00&gt;..&lt;0xFF&gt; (as llama2.c's
    /// vocabularies start), then placeholders "&lt;tok_{id}&gt;". Good for running the model by token ids only.
    /// </summary>
    public static GgufVocabulary Placeholder(ModelConfig config)
    {
        int n = config.VocabSize;
        if (n < 259) throw new PeftSharpException($"GGUF export: the model has no tokenizer and a vocabulary of {n} tokens; a stand-in vocabulary needs at least 259 (3 specials + 256 bytes).");
        var tokens = new string[n];
        var types = new int[n];
        var scores = new float[n];
        tokens[0] = "<unk>"; types[0] = Unknown;
        tokens[1] = "<s>"; types[1] = Control;
        tokens[2] = "</s>"; types[2] = Control;
        for (int b = 0; b < 256; b++) { tokens[3 + b] = $"<0x{b:X2}>"; types[3 + b] = Byte; }
        for (int i = 259; i < n; i++) { tokens[i] = $"<tok_{i}>"; types[i] = UserDefined; scores[i] = -(i - 259); }
        return new GgufVocabulary
        {
            Model = "llama", PreTokenizer = "default", Tokens = tokens, TokenTypes = types, Scores = scores,
            BosId = config.BosTokenId ?? 1, EosId = config.EosTokenIds.Length > 0 ? config.EosTokenIds[0] : 2, UnkId = 0, AddBos = true,
        };
    }

    /// <summary>Reads tokenizer.json (and tokenizer_config.json beside it) in <paramref name="folder"/>; null when there is no tokenizer.json.</summary>
    public static GgufVocabulary? FromFolder(string folder, ModelConfig config)
    {
        string path = Path.Combine(folder, "tokenizer.json");
        if (!File.Exists(path))
        {
            string vocabJson = Path.Combine(folder, "vocab.json"), mergesTxt = Path.Combine(folder, "merges.txt");
            if (!File.Exists(vocabJson) || !File.Exists(mergesTxt)) return null;
            return FromTokenizerJson(LegacyGpt2TokenizerJson(vocabJson, mergesTxt), vocabJson, folder, config);
        }
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return FromTokenizerJson(doc.RootElement, path, folder, config);
    }

    /// <summary>
    /// A GPT-2 style folder without tokenizer.json (vocab.json + merges.txt): the tokenizer.json transformers would build
    /// from it (byte-level BPE, GPT-2's regex), with &lt;|endoftext|&gt; as a special added token when the vocabulary has it.
    /// </summary>
    private static JsonElement LegacyGpt2TokenizerJson(string vocabJson, string mergesTxt)
    {
        var vocab = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(vocabJson))
            ?? throw new PeftSharpException($"{vocabJson}: expected a JSON object of token → id.");
        var merges = new System.Text.Json.Nodes.JsonArray();
        foreach (var line in File.ReadLines(mergesTxt))
            if (line.Length > 0 && !line.StartsWith("#version", StringComparison.Ordinal)) merges.Add(line);
        var added = new System.Text.Json.Nodes.JsonArray();
        if (vocab["<|endoftext|>"] is { } eot) added.Add(new System.Text.Json.Nodes.JsonObject { ["id"] = eot.GetValue<int>(), ["content"] = "<|endoftext|>", ["special"] = true });
        var root = new System.Text.Json.Nodes.JsonObject
        {
            ["added_tokens"] = added,
            ["pre_tokenizer"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "BPE", ["vocab"] = vocab.DeepClone(), ["merges"] = merges },
        };
        return JsonDocument.Parse(root.ToJsonString()).RootElement;
    }

    private static GgufVocabulary FromTokenizerJson(JsonElement root, string path, string folder, ModelConfig config)
    {
        var model = root.GetProperty("model");
        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "BPE";
        if (type != "BPE") throw new PeftSharpException($"{path}: GGUF export supports BPE tokenizers; model.type is '{type}'.");
        var vocab = model.GetProperty("vocab");
        int size = config.VocabSize;
        var byId = new Dictionary<int, string>();
        foreach (var p in vocab.EnumerateObject()) byId[p.Value.GetInt32()] = p.Name;
        var added = new Dictionary<int, (string Content, bool Special)>();
        if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
            foreach (var a in at.EnumerateArray())
                added[a.GetProperty("id").GetInt32()] = (a.GetProperty("content").GetString()!, a.TryGetProperty("special", out var s) && s.GetBoolean());
        int largest = Math.Max(byId.Count == 0 ? -1 : byId.Keys.Max(), added.Count == 0 ? -1 : added.Keys.Max());
        if (largest >= size)
            throw new PeftSharpException($"{path}: token id {largest} is outside the model's vocab_size {size}; the tokenizer does not belong to this model.");

        bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
        bool byteLevel = ContainsType(root, "pre_tokenizer", "ByteLevel") || ContainsType(root, "decoder", "ByteLevel");
        var merges = ReadMerges(model, path);
        var tokens = new string[size];
        var types = new int[size];
        for (int i = 0; i < size; i++)
        {
            if (added.TryGetValue(i, out var a)) { tokens[i] = a.Content; types[i] = a.Special ? Control : UserDefined; }
            else if (byId.TryGetValue(i, out var tok)) { tokens[i] = tok; types[i] = Normal; }
            else { tokens[i] = $"[PAD{i}]"; types[i] = Unused; }
        }
        var specials = ReadSpecials(folder, root, tokens, config);
        string? chatTemplate = ReadChatTemplate(folder);
        if (byteLevel)
            return new GgufVocabulary
            {
                Model = "gpt2", PreTokenizer = PreTokenizerName(root, path), Tokens = tokens, TokenTypes = types,
                Merges = merges.Select(m => m.A + " " + m.B).ToArray(),
                BosId = specials.Bos, EosId = specials.Eos, UnkId = specials.Unk, PadId = specials.Pad,
                AddBos = specials.AddBos, AddEos = specials.AddEos, ChatTemplate = chatTemplate,
            };
        if (!byteFallback)
            throw new PeftSharpException($"{path}: GGUF export supports byte-level BPE (GPT-2, Llama 3, Qwen2) and SentencePiece-style BPE with byte_fallback (Llama 2, Mistral); this tokenizer is neither.");
        // SentencePiece BPE: llama.cpp merges the adjacent pair whose joined token scores highest, so a token's
        // score is minus the rank of the merge that makes it.
        var scores = new float[size];
        var rank = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int r = 0; r < merges.Count; r++) rank.TryAdd(merges[r].A + merges[r].B, r);
        for (int i = 0; i < size; i++)
        {
            if (types[i] == Normal && tokens[i].Length == 6 && tokens[i].StartsWith("<0x", StringComparison.Ordinal) && tokens[i].EndsWith('>')) types[i] = Byte;
            scores[i] = rank.TryGetValue(tokens[i], out int r) ? -r : 0f;
        }
        if (specials.Unk is int unk && types[unk] != Control) types[unk] = Unknown;
        else if (specials.Unk is int u) types[u] = Unknown;
        return new GgufVocabulary
        {
            Model = "llama", PreTokenizer = "default", Tokens = tokens, TokenTypes = types, Scores = scores,
            BosId = specials.Bos, EosId = specials.Eos, UnkId = specials.Unk, PadId = specials.Pad,
            AddBos = specials.AddBos, AddEos = specials.AddEos, ChatTemplate = chatTemplate,
        };
    }

    private static bool ContainsType(JsonElement root, string property, string type)
    {
        if (!root.TryGetProperty(property, out var e) || e.ValueKind != JsonValueKind.Object) return false;
        return Flatten(e).Any(x => x.TryGetProperty("type", out var tt) && tt.GetString() == type);
    }

    private static IEnumerable<JsonElement> Flatten(JsonElement e)
    {
        yield return e;
        foreach (var key in new[] { "pretokenizers", "decoders", "normalizers", "processors" })
            if (e.TryGetProperty(key, out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var c in list.EnumerateArray())
                    foreach (var x in Flatten(c)) yield return x;
    }

    /// <summary>
    /// llama.cpp's pre-tokenizer name for a byte-level BPE: "gpt-2" for ByteLevel's own regex, "llama-bpe" for
    /// Llama 3's split regex (digits in groups of up to three), "qwen2" for Qwen2's (digits one by one).
    /// </summary>
    private static string PreTokenizerName(JsonElement root, string path)
    {
        var pre = root.GetProperty("pre_tokenizer");
        var parts = Flatten(pre).ToList();
        var split = parts.FirstOrDefault(x => x.TryGetProperty("type", out var tt) && tt.GetString() == "Split");
        if (split.ValueKind == JsonValueKind.Undefined)
        {
            var byteLevel = parts.First(x => x.TryGetProperty("type", out var tt) && tt.GetString() == "ByteLevel");
            bool useRegex = !byteLevel.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False;
            if (useRegex && !parts.Any(x => x.TryGetProperty("type", out var tt) && tt.GetString() == "Digits")) return "gpt-2";
            throw new PeftSharpException($"{path}: this byte-level pre-tokenizer has no llama.cpp counterpart (known: GPT-2's ByteLevel regex, Llama 3's and Qwen2's split regexes).");
        }
        string pattern = split.GetProperty("pattern").TryGetProperty("Regex", out var rx) ? rx.GetString() ?? "" : "";
        if (pattern.Contains(@"\p{N}{1,3}", StringComparison.Ordinal) && pattern.Contains("(?i:'s|'t|'re|'ve|'m|'ll|'d)", StringComparison.Ordinal)) return "llama-bpe";
        if (pattern.Contains(@"|\p{N}|", StringComparison.Ordinal) && pattern.Contains("(?i:'s|'t|'re|'ve|'m|'ll|'d)", StringComparison.Ordinal)) return "qwen2";
        throw new PeftSharpException($"{path}: the split regex {JsonSerializer.Serialize(pattern)} is not one llama.cpp knows (GPT-2, Llama 3 or Qwen2).");
    }

    private static List<(string A, string B)> ReadMerges(JsonElement model, string path)
    {
        var merges = new List<(string, string)>();
        if (!model.TryGetProperty("merges", out var m)) return merges;
        foreach (var e in m.EnumerateArray())
        {
            if (e.ValueKind == JsonValueKind.String)
            {
                var s = e.GetString()!;
                int space = s.IndexOf(' ', 1);
                if (space < 0) throw new PeftSharpException($"{path}: merge \"{s}\" is not two tokens separated by a space.");
                merges.Add((s[..space], s[(space + 1)..]));
            }
            else merges.Add((e[0].GetString()!, e[1].GetString()!));
        }
        return merges;
    }

    private sealed record Specials(int? Bos, int? Eos, int? Unk, int? Pad, bool AddBos, bool AddEos);

    private static Specials ReadSpecials(string folder, JsonElement root, string[] tokens, ModelConfig config)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = tokens.Length - 1; i >= 0; i--) index[tokens[i]] = i;
        JsonElement? tc = null;
        string tcPath = Path.Combine(folder, "tokenizer_config.json");
        JsonDocument? tcDoc = File.Exists(tcPath) ? JsonDocument.Parse(File.ReadAllBytes(tcPath)) : null;
        try
        {
            if (tcDoc != null) tc = tcDoc.RootElement;
            int? Id(string key)
            {
                if (tc is not { } c || !c.TryGetProperty(key, out var v)) return null;
                string? content = v.ValueKind switch
                {
                    JsonValueKind.String => v.GetString(),
                    JsonValueKind.Object when v.TryGetProperty("content", out var cc) => cc.GetString(),
                    _ => null,
                };
                return content != null && index.TryGetValue(content, out int id) ? id : null;
            }
            // add_bos: the post-processor's single-sequence template starts with a special token (Llama), or
            // tokenizer_config.json says so.
            bool addBos = false, addEos = false;
            if (root.TryGetProperty("post_processor", out var post) && post.ValueKind == JsonValueKind.Object)
                foreach (var p in Flatten(post))
                    if (p.TryGetProperty("type", out var pt) && pt.GetString() == "TemplateProcessing" && p.TryGetProperty("single", out var single))
                    {
                        var items = single.EnumerateArray().ToList();
                        addBos = items.Count > 0 && items[0].TryGetProperty("SpecialToken", out _);
                        addEos = items.Count > 1 && items[^1].TryGetProperty("SpecialToken", out _);
                    }
            if (tc is { } cfg)
            {
                if (cfg.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False) addBos = ab.GetBoolean();
                if (cfg.TryGetProperty("add_eos_token", out var ae) && ae.ValueKind is JsonValueKind.True or JsonValueKind.False) addEos = ae.GetBoolean();
            }
            int? bos = Id("bos_token") ?? config.BosTokenId;
            int? eos = Id("eos_token") ?? (config.EosTokenIds.Length > 0 ? config.EosTokenIds[0] : null);
            return new Specials(bos, eos, Id("unk_token"), Id("pad_token") ?? config.PadTokenId, addBos, addEos);
        }
        finally
        {
            tcDoc?.Dispose();
        }
    }

    /// <summary>
    /// The chat template as llama.cpp's Jinja engine can run it: transformers' <c>{% generation %}</c> …
    /// <c>{% endgeneration %}</c> tags (which only mark the assistant's tokens for training masks, and which llama.cpp
    /// does not know) become <c>{% if true %}</c> … <c>{% endif %}</c>, keeping their whitespace control, so the text
    /// rendered is the same.
    /// </summary>
    public static string ForLlamaCpp(string template)
    {
        template = System.Text.RegularExpressions.Regex.Replace(template, @"\{%(-?)\s*generation\s*(-?)%\}", "{%$1 if true $2%}");
        return System.Text.RegularExpressions.Regex.Replace(template, @"\{%(-?)\s*endgeneration\s*(-?)%\}", "{%$1 endif $2%}");
    }

    private static string? ReadChatTemplate(string folder)
    {
        var template = ReadChatTemplateAsIs(folder);
        return template == null ? null : ForLlamaCpp(template);
    }

    private static string? ReadChatTemplateAsIs(string folder)
    {
        string tcPath = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(tcPath))
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(tcPath));
            if (doc.RootElement.TryGetProperty("chat_template", out var t))
            {
                if (t.ValueKind == JsonValueKind.String) return t.GetString();
                if (t.ValueKind == JsonValueKind.Array)
                    foreach (var e in t.EnumerateArray())
                        if (e.TryGetProperty("name", out var n) && n.GetString() == "default") return e.GetProperty("template").GetString();
            }
        }
        string jinja = Path.Combine(folder, "chat_template.jinja");
        return File.Exists(jinja) ? File.ReadAllText(jinja) : null;
    }
}
