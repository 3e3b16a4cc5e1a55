using System.Text.Json;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>
/// A Hugging Face tokenizer (tokenizer.json, or a legacy vocab.json + merges.txt byte-level BPE),
/// reproducing the Rust tokenizers library's ids and decoded text exactly: added tokens are split
/// out of the raw text first, then each remaining piece is normalized, pre-tokenized and run
/// through the BPE model; post-processing adds bos/eos when asked.
/// Instances are immutable and safe to use from several threads.
/// </summary>
public sealed class Tokenizer
{
    private readonly BpeModel _model;
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly PostProcessor? _postProcessor;
    private readonly Decoder? _decoder;
    private readonly Dictionary<int, AddedToken> _addedById = new();
    private readonly Dictionary<string, AddedToken> _addedByContent = new(StringComparer.Ordinal);
    private readonly AddedTokenMatcher _rawMatcher, _normalizedMatcher;
    private readonly int[] _prefix, _suffix;
    // Set when pre-tokenization is "split at this regex (isolated), then byte-level map" (GPT-2, Llama 3,
    // Qwen2): words are then mapped into a scratch buffer and looked up without allocating strings.
    private readonly SplitRegex? _byteLevelWords;

    private Tokenizer(BpeModel model, Normalizer? normalizer, PreTokenizer? preTokenizer, PostProcessor? postProcessor,
        Decoder? decoder, IReadOnlyList<AddedToken> addedTokens, SpecialTokens specials)
    {
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _postProcessor = postProcessor;
        _decoder = decoder;
        foreach (var t in addedTokens)
        {
            _addedById[t.Id] = t;
            _addedByContent[t.Content] = t;
        }
        AddedTokens = addedTokens;
        _rawMatcher = new AddedTokenMatcher(addedTokens.Where(t => !t.Normalized).Select(t => (t.Content, t)));
        _normalizedMatcher = new AddedTokenMatcher(addedTokens.Where(t => t.Normalized)
            .Select(t => (normalizer?.Normalize(t.Content) ?? t.Content, t)));
        var prefix = new List<int>();
        var suffix = new List<int>();
        postProcessor?.SingleAffixes(prefix, suffix);
        _byteLevelWords = ByteLevelWordsRegex(preTokenizer);
        _prefix = prefix.ToArray();
        _suffix = suffix.ToArray();
        BosToken = specials.Bos;
        EosToken = specials.Eos;
        PadToken = specials.Pad;
        UnkToken = specials.Unk;
        int max = model.VocabSize - 1;
        foreach (var t in addedTokens) max = Math.Max(max, t.Id);
        VocabSize = max + 1;
    }

    /// <summary>One more than the largest token id (model vocabulary and added tokens).</summary>
    public int VocabSize { get; }

    /// <summary>The added tokens of tokenizer.json (special and not), in file order.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>Special tokens named by tokenizer_config.json (or special_tokens_map.json) beside the tokenizer, when present.</summary>
    public string? BosToken { get; }
    public string? EosToken { get; }
    public string? PadToken { get; }
    public string? UnkToken { get; }
    public int? BosTokenId => IdOf(BosToken);
    public int? EosTokenId => IdOf(EosToken);
    public int? PadTokenId => IdOf(PadToken);
    public int? UnkTokenId => IdOf(UnkToken);

    private int? IdOf(string? token) => token != null && TokenToId(token) is int id ? id : null;

    /// <summary>The id of a token string (added tokens first, then the model vocabulary), or null.</summary>
    public int? TokenToId(string token)
    {
        if (_addedByContent.TryGetValue(token, out var added)) return added.Id;
        return _model.TryTokenToId(token, out int id) ? id : null;
    }

    /// <summary>The token string of an id (added tokens first, then the model vocabulary), or null.</summary>
    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var added) ? added.Content : _model.IdToToken(id);

    /// <summary>True for ids of added tokens marked special.</summary>
    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    /// <summary>Reads a tokenizer.json (special tokens come from tokenizer_config.json beside it, when present).</summary>
    public static Tokenizer FromFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file not found: {path}", path);
        string file = path;
        try
        {
            return Read(path, file);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new PeftSharpException($"{path}: unexpected tokenizer.json structure ({e.Message}).", e);
        }
    }

    private static Tokenizer Read(string path, string file)
    {
        using (var doc = Json.ParseFile(path))
        {
            var root = doc.RootElement;
            if (!root.TryGetProperty("model", out var m) || m.ValueKind != JsonValueKind.Object)
                throw new PeftSharpException($"{path}: expected a 'model' object.");
            string type = Json.OptionalString(m, "type") ?? (m.TryGetProperty("merges", out _) ? "BPE" : "?");
            if (type != "BPE") throw new PeftSharpException($"{path}: model type '{type}' is not supported (expected BPE).");
            var model = ReadBpe(m, file);
            var added = new List<AddedToken>();
            if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
                foreach (var t in at.EnumerateArray())
                    added.Add(new AddedToken(Json.Int(t, "id", -1), Json.String(t, "content", file), Json.Bool(t, "special", false),
                        Json.Bool(t, "lstrip", false), Json.Bool(t, "rstrip", false), Json.Bool(t, "single_word", false),
                        Json.Bool(t, "normalized", !Json.Bool(t, "special", false))));
            return new Tokenizer(model,
                Normalizer.FromJson(Prop(root, "normalizer"), file),
                PreTokenizer.FromJson(Prop(root, "pre_tokenizer"), file),
                PostProcessor.FromJson(Prop(root, "post_processor"), file),
                Decoder.FromJson(Prop(root, "decoder"), file),
                added, SpecialTokens.Read(Path.GetDirectoryName(Path.GetFullPath(path))!))
            { Fingerprint = FingerprintOf(path) };
        }
    }

    /// <summary>Reads a tokenizer folder: tokenizer.json, else a legacy GPT-2 style vocab.json + merges.txt.</summary>
    public static Tokenizer FromFolder(string directory)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Tokenizer folder not found: {directory}");
        string json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json)) return FromFile(json);
        string vocab = Path.Combine(directory, "vocab.json"), merges = Path.Combine(directory, "merges.txt");
        if (File.Exists(vocab) && File.Exists(merges)) return FromLegacyFiles(vocab, merges);
        throw new PeftSharpException($"{directory}: expected tokenizer.json, or vocab.json and merges.txt.");
    }

    /// <summary>A GPT-2 style byte-level BPE from vocab.json + merges.txt (added tokens from tokenizer_config.json / added_tokens.json beside them).</summary>
    public static Tokenizer FromLegacyFiles(string vocabPath, string mergesPath)
    {
        if (!File.Exists(vocabPath)) throw new FileNotFoundException($"Tokenizer vocabulary not found: {vocabPath}", vocabPath);
        if (!File.Exists(mergesPath)) throw new FileNotFoundException($"Tokenizer merges not found: {mergesPath}", mergesPath);
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        using (var doc = Json.ParseFile(vocabPath))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new PeftSharpException($"{vocabPath}: expected a JSON object of token → id.");
            foreach (var kv in doc.RootElement.EnumerateObject())
                vocab[kv.Name] = kv.Value.ValueKind == JsonValueKind.Number ? kv.Value.GetInt32()
                    : throw new PeftSharpException($"{vocabPath}: the id of token '{kv.Name}' is not a number.");
        }
        var merges = new List<(string, string)>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(mergesPath))
        {
            lineNumber++;
            if (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal)) continue;
            if (line.Length == 0) continue;
            int space = line.IndexOf(' ');
            if (space <= 0 || space != line.LastIndexOf(' '))
                throw new PeftSharpException($"{mergesPath}:{lineNumber}: expected two tokens separated by one space, got '{line}'.");
            merges.Add((line[..space], line[(space + 1)..]));
        }
        string dir = Path.GetDirectoryName(Path.GetFullPath(vocabPath))!;
        var specials = SpecialTokens.Read(dir);
        var added = SpecialTokens.ReadLegacyAddedTokens(dir, vocab, specials);
        var model = new BpeModel(vocab, merges, null, false, false, false, null, null, Path.GetFileName(mergesPath));
        return new Tokenizer(model, null, new ByteLevelPreTokenizer(false, true), null, new ByteLevelDecoder(), added, specials)
            { Fingerprint = FingerprintOf(vocabPath, mergesPath, Path.Combine(dir, "added_tokens.json")) };
    }

    /// <summary>
    /// SHA-256 (hex) of the files this tokenizer was read from and the special-token files beside them; two tokenizers
    /// with the same fingerprint encode alike (the tokenization cache is keyed by it). Null for a tokenizer built in memory.
    /// </summary>
    public string? Fingerprint { get; private init; }

    private static string FingerprintOf(params string[] files)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(files[0]))!;
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var f in files.Concat([Path.Combine(dir, "tokenizer_config.json"), Path.Combine(dir, "special_tokens_map.json")]))
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(f) + "\n"));
            if (File.Exists(f)) sha.AppendData(File.ReadAllBytes(f));
        }
        return Convert.ToHexString(sha.GetHashAndReset());
    }

    private static JsonElement Prop(JsonElement root, string key) => root.TryGetProperty(key, out var v) ? v : default;

    private static BpeModel ReadBpe(JsonElement m, string file)
    {
        if (!m.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object)
            throw new PeftSharpException($"{file}: expected model.vocab to be an object of token → id.");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var kv in v.EnumerateObject()) vocab[kv.Name] = kv.Value.GetInt32();
        var merges = new List<(string, string)>();
        int index = 0;
        foreach (var merge in Json.Array(m, "merges", file).EnumerateArray())
        {
            if (merge.ValueKind == JsonValueKind.String)
            {
                string s = merge.GetString()!;
                int space = s.IndexOf(' ');
                if (space < 0) throw new PeftSharpException($"{file}: model.merges[{index}] '{s}' has no space between its two tokens.");
                merges.Add((s[..space], s[(space + 1)..]));
            }
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2)
                merges.Add((merge[0].GetString()!, merge[1].GetString()!));
            else throw new PeftSharpException($"{file}: model.merges[{index}] must be \"a b\" or [a, b].");
            index++;
        }
        if (m.TryGetProperty("dropout", out var d) && d.ValueKind == JsonValueKind.Number && d.GetDouble() > 0)
            throw new PeftSharpException($"{file}: BPE dropout is not supported (model.dropout = {d}).");
        return new BpeModel(vocab, merges, Json.OptionalString(m, "unk_token"), Json.Bool(m, "fuse_unk", false),
            Json.Bool(m, "byte_fallback", false), Json.Bool(m, "ignore_merges", false),
            Json.OptionalString(m, "continuing_subword_prefix"), Json.OptionalString(m, "end_of_word_suffix"), file);
    }

    /// <summary>Token ids of <paramref name="text"/>; with <paramref name="addSpecialTokens"/> the post-processor's bos/eos are added.</summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 8);
        if (addSpecialTokens) ids.AddRange(_prefix);
        EncodeInto(text, ids);
        if (addSpecialTokens) ids.AddRange(_suffix);
        return ids.ToArray();
    }

    /// <summary>Token ids and their token strings.</summary>
    public (int[] Ids, string[] Tokens) EncodeWithTokens(string text, bool addSpecialTokens = true)
    {
        var ids = Encode(text, addSpecialTokens);
        var tokens = new string[ids.Length];
        for (int i = 0; i < ids.Length; i++) tokens[i] = IdToToken(ids[i]) ?? "";
        return (ids, tokens);
    }

    private void EncodeInto(string text, List<int> ids)
    {
        var pieces = new List<(int Start, int End, AddedToken? Token)>();
        _rawMatcher.Split(text, pieces);
        var segments = new List<Segment>();
        var inner = new List<(int Start, int End, AddedToken? Token)>();
        foreach (var (start, end, token) in pieces)
        {
            if (token != null) { ids.Add(token.Id); continue; }
            string piece = start == 0 && end == text.Length ? text : text[start..end];
            if (_normalizer != null) piece = _normalizer.Normalize(piece);
            if (_normalizedMatcher.IsEmpty)
            {
                Model(piece, start == 0, segments, ids);
                continue;
            }
            inner.Clear();
            _normalizedMatcher.Split(piece, inner);
            foreach (var (s, e, t) in inner)
            {
                if (t != null) ids.Add(t.Id);
                else Model(piece[s..e], start == 0 && s == 0, segments, ids);
            }
        }
    }

    private static SplitRegex? ByteLevelWordsRegex(PreTokenizer? pre) => pre switch
    {
        ByteLevelPreTokenizer { AddPrefixSpace: false, UseRegex: true } => ByteLevelPreTokenizer.Gpt2SplitRegex,
        SequencePreTokenizer { Children: [SplitPreTokenizer { IsolatingRegex: { } regex }, ByteLevelPreTokenizer { AddPrefixSpace: false, UseRegex: false }] } => regex,
        _ => null,
    };

    private void Model(string normalized, bool atStart, List<Segment> segments, List<int> ids)
    {
        if (normalized.Length == 0) return;
        if (_byteLevelWords != null)
        {
            ByteLevelWords(normalized, ids);
            return;
        }
        if (_preTokenizer == null)
        {
            _model.Tokenize(normalized, ids);
            return;
        }
        segments.Clear();
        segments.Add(new Segment(normalized, atStart));
        _preTokenizer.PreTokenize(segments);
        foreach (var s in segments) _model.Tokenize(s.Text, ids);
    }

    private void ByteLevelWords(string text, List<int> ids)
    {
        var matches = new List<(int Start, int End)>();
        _byteLevelWords!.Matches(text, matches);
        int previous = 0;
        foreach (var (start, end) in matches)
        {
            if (start > previous) ByteLevelWord(text.AsSpan(previous, start - previous), ids);
            if (end > start) ByteLevelWord(text.AsSpan(start, end - start), ids);
            previous = end;
        }
        if (text.Length > previous) ByteLevelWord(text.AsSpan(previous), ids);
    }

    private void ByteLevelWord(ReadOnlySpan<char> word, List<int> ids)
    {
        int byteCount = System.Text.Encoding.UTF8.GetByteCount(word);
        byte[]? rentedBytes = null;
        char[]? rentedChars = null;
        Span<byte> bytes = byteCount <= 512 ? stackalloc byte[byteCount] : (rentedBytes = System.Buffers.ArrayPool<byte>.Shared.Rent(byteCount)).AsSpan(0, byteCount);
        Span<char> chars = byteCount <= 512 ? stackalloc char[byteCount] : (rentedChars = System.Buffers.ArrayPool<char>.Shared.Rent(byteCount)).AsSpan(0, byteCount);
        System.Text.Encoding.UTF8.GetBytes(word, bytes);
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteLevel.ByteToChar(bytes[i]);
        _model.Tokenize(chars, ids);
        if (rentedBytes != null) System.Buffers.ArrayPool<byte>.Shared.Return(rentedBytes);
        if (rentedChars != null) System.Buffers.ArrayPool<char>.Shared.Return(rentedChars);
    }

    /// <summary>The text of <paramref name="ids"/> through the decoder (ids unknown to the tokenizer are skipped).</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                if (!(skipSpecialTokens && added.Special)) tokens.Add(added.Content);
                continue;
            }
            var token = _model.IdToToken(id);
            if (token != null) tokens.Add(token);
        }
        return _decoder != null ? _decoder.Decode(tokens) : string.Join(' ', tokens);
    }
}
