using System.Text.Json;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>bos/eos/pad/unk as tokenizer_config.json (else special_tokens_map.json) names them: strings or {"content": ...}.</summary>
internal sealed record SpecialTokens(string? Bos, string? Eos, string? Pad, string? Unk, string[] Additional)
{
    public static SpecialTokens Read(string directory)
    {
        foreach (var name in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            string path = Path.Combine(directory, name);
            if (!File.Exists(path)) continue;
            using var doc = Parse(path);
            var root = doc.RootElement;
            var additional = new List<string>();
            if (root.TryGetProperty("additional_special_tokens", out var a) && a.ValueKind == JsonValueKind.Array)
                foreach (var x in a.EnumerateArray())
                    if (Content(x) is string s) additional.Add(s);
            return new SpecialTokens(Get(root, "bos_token"), Get(root, "eos_token"), Get(root, "pad_token"), Get(root, "unk_token"), additional.ToArray());
        }
        return new SpecialTokens(null, null, null, null, []);
    }

    /// <summary>
    /// Added tokens of a legacy folder: tokenizer_config.json's added_tokens_decoder, added_tokens.json,
    /// and the named special tokens that the vocabulary holds.
    /// </summary>
    public static List<AddedToken> ReadLegacyAddedTokens(string directory, Dictionary<string, int> vocab, SpecialTokens specials)
    {
        var byId = new SortedDictionary<int, AddedToken>();
        string config = Path.Combine(directory, "tokenizer_config.json");
        if (File.Exists(config))
        {
            using var doc = Parse(config);
            if (doc.RootElement.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
                foreach (var kv in dec.EnumerateObject())
                {
                    if (!int.TryParse(kv.Name, out int id))
                        throw new PeftSharpException($"{config}: added_tokens_decoder key '{kv.Name}' is not an integer id.");
                    var t = kv.Value;
                    bool special = Json.Bool(t, "special", false);
                    byId[id] = new AddedToken(id, Json.String(t, "content", config), special, Json.Bool(t, "lstrip", false),
                        Json.Bool(t, "rstrip", false), Json.Bool(t, "single_word", false), Json.Bool(t, "normalized", !special));
                }
        }
        string addedPath = Path.Combine(directory, "added_tokens.json");
        if (File.Exists(addedPath))
        {
            using var doc = Parse(addedPath);
            foreach (var kv in doc.RootElement.EnumerateObject())
            {
                int id = kv.Value.GetInt32();
                if (!byId.ContainsKey(id)) byId[id] = new AddedToken(id, kv.Name, false);
            }
        }
        foreach (var name in new[] { specials.Bos, specials.Eos, specials.Pad, specials.Unk }.Concat(specials.Additional))
        {
            if (name == null || !vocab.TryGetValue(name, out int id) || byId.ContainsKey(id)) continue;
            byId[id] = new AddedToken(id, name, true);
        }
        return byId.Values.ToList();
    }

    private static JsonDocument Parse(string path) => Json.ParseFile(path);

    private static string? Get(JsonElement root, string key) => root.TryGetProperty(key, out var v) ? Content(v) : null;

    private static string? Content(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => null,
    };
}
