using System.Text.Json;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>Reading tokenizer.json values with errors that name the file and key.</summary>
internal static class Json
{
    public static string String(JsonElement e, string key, string file) =>
        e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new PeftSharpException($"{file}: expected a string at key '{key}' in {Describe(e)}.");

    public static string? OptionalString(JsonElement e, string key) =>
        e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public static bool Bool(JsonElement e, string key, bool fallback) =>
        e.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    public static int Int(JsonElement e, string key, int fallback) =>
        e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : fallback;

    public static JsonElement Object(JsonElement e, string key, string file) =>
        e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Object
            ? v
            : throw new PeftSharpException($"{file}: expected an object at key '{key}' in {Describe(e)}.");

    public static JsonElement Array(JsonElement e, string key, string file) =>
        e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array
            ? v
            : throw new PeftSharpException($"{file}: expected an array at key '{key}' in {Describe(e)}.");

    /// <summary>Metaspace's replacement character.</summary>
    public static char Replacement(JsonElement e, string file)
    {
        string r = OptionalString(e, "replacement") ?? "\u2581";
        return r.Length == 1 ? r[0] : throw new PeftSharpException($"{file}: Metaspace 'replacement' must be one character, got '{r}'.");
    }

    /// <summary>Metaspace's prepend_scheme, or the older add_prefix_space flag.</summary>
    public static PrependScheme PrependScheme(JsonElement e, string file) => OptionalString(e, "prepend_scheme") switch
    {
        "always" => Tokenizers.PrependScheme.Always,
        "first" => Tokenizers.PrependScheme.First,
        "never" => Tokenizers.PrependScheme.Never,
        null => Bool(e, "add_prefix_space", true) ? Tokenizers.PrependScheme.Always : Tokenizers.PrependScheme.Never,
        var other => throw new PeftSharpException($"{file}: Metaspace 'prepend_scheme' is '{other}', expected always, first or never."),
    };

    /// <summary>Parses a JSON file (a UTF-8 byte order mark is allowed); malformed JSON is a user error naming the file.</summary>
    public static JsonDocument ParseFile(string path) => JsonInput.ParseDocumentFile(path);

    private static string Describe(JsonElement e) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) ? $"the '{t}' entry" : "an entry";
}
