using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Formats.Safetensors;

namespace PeftSharp.Formats.HfConfig;

/// <summary>Typed reads of a Hugging Face JSON config object, with errors that name the file and key.</summary>
internal readonly struct JsonKeys(JsonObject json, string source)
{
    public JsonObject Json { get; } = json;
    public string Source { get; } = source;

    public bool Has(string key) => Json.ContainsKey(key);
    public bool IsNull(string key) => Json.TryGetPropertyValue(key, out var n) && n == null;

    public PeftSharpException Error(string key, string expected) =>
        new($"{Source}: key '{key}' must be {expected}, found {Describe(Json[key])}.");

    private static string Describe(JsonNode? node) => node == null ? "null" : $"{node.GetValueKind().ToString().ToLowerInvariant()} {node.ToJsonString()}";

    public int? IntOrNull(string key)
    {
        var node = Json[key];
        if (node == null) return null;
        return AsInt(node) ?? throw Error(key, "an integer");
    }

    /// <summary>A JSON number that is a whole number within int's range, else null (out of range and huge numbers included).</summary>
    private static int? AsInt(JsonNode? node)
    {
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out double d)
            && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
        return null;
    }

    public int Int(string key, int fallback) => IntOrNull(key) ?? fallback;

    public int PositiveInt(string key, int fallback)
    {
        int value = Int(key, fallback);
        if (value <= 0) throw Error(key, "a positive integer");
        return value;
    }

    public double? DoubleOrNull(string key)
    {
        var node = Json[key];
        if (node == null) return null;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out double d) && double.IsFinite(d)) return d;
        throw Error(key, "a finite number");
    }

    public double Double(string key, double fallback) => DoubleOrNull(key) ?? fallback;

    public bool Bool(string key, bool fallback)
    {
        var node = Json[key];
        if (node == null) return fallback;
        return node.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error(key, "true or false"),
        };
    }

    public string? StringOrNull(string key)
    {
        var node = Json[key];
        if (node == null) return null;
        return node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : throw Error(key, "a string");
    }

    /// <summary>An id that may be a single integer or a list of integers (eos_token_id); null or absent gives the fallback.</summary>
    public int[] IntList(string key, int[] fallback)
    {
        if (!Json.ContainsKey(key)) return fallback;
        var node = Json[key];
        if (node == null) return [];
        if (node is JsonArray array)
        {
            var result = new int[array.Count];
            for (int i = 0; i < array.Count; i++)
            {
                result[i] = AsInt(array[i]) ?? throw Error(key, "an integer or a list of integers (each within 32 bits)");
            }
            return result;
        }
        return [IntOrNull(key) ?? throw Error(key, "an integer or a list of integers")];
    }

    public JsonObject? ObjectOrNull(string key)
    {
        var node = Json[key];
        if (node == null) return null;
        return node as JsonObject ?? throw Error(key, "an object");
    }

    /// <summary>Reads a JSON object from a file, naming the file when it is missing or not JSON.</summary>
    public static JsonObject ReadFile(string path) => JsonInput.ReadObjectFile(path);
}

