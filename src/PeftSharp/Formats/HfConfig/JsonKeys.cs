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
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
        {
            double d = v.GetValue<double>();
            if (d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
        }
        throw Error(key, "an integer");
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
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number) return v.GetValue<double>();
        throw Error(key, "a number");
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
                if (array[i] is not JsonValue item || item.GetValueKind() != JsonValueKind.Number) throw Error(key, "an integer or a list of integers");
                result[i] = item.GetValue<int>();
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
    public static JsonObject ReadFile(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found.");
        try
        {
            return JsonNode.Parse(File.ReadAllText(path), documentOptions: new JsonDocumentOptions { AllowTrailingCommas = false }) as JsonObject
                ?? throw new PeftSharpException($"{path}: expected a JSON object at the top level.");
        }
        catch (JsonException e)
        {
            throw new PeftSharpException($"{path}: not valid JSON (line {e.LineNumber + 1}): {e.Message}", e);
        }
    }
}

/// <summary>
/// Writes JSON the way transformers' save_pretrained does (Python json.dumps with indent=2,
/// sort_keys=True, ASCII-only escaping, Python float repr) so configs we write look like theirs.
/// </summary>
internal static class PythonJson
{
    public static string Serialize(JsonNode? node)
    {
        var sb = new StringBuilder();
        Write(sb, node, 0);
        return sb.Append('\n').ToString();
    }

    public static void WriteFile(string path, JsonNode node) => AtomicFile.WriteAllText(path, Serialize(node));

    /// <summary>A JSON number node whose text is Python's repr of the float (1e-05, 10000.0).</summary>
    public static JsonNode Float(double value) => JsonNode.Parse(FloatText(value))!;

    public static string FloatText(double value)
    {
        if (double.IsNaN(value) || double.IsInfinity(value)) throw new ArgumentOutOfRangeException(nameof(value), "JSON has no NaN or infinity.");
        if (value == 0) return double.IsNegative(value) ? "-0.0" : "0.0";
        // Shortest round-trip digits and decimal exponent, then Python's repr layout.
        string r = value.ToString("R", CultureInfo.InvariantCulture);
        bool negative = r[0] == '-';
        if (negative) r = r[1..];
        int exponent = 0;
        int ePos = r.IndexOfAny(['E', 'e']);
        if (ePos >= 0)
        {
            exponent = int.Parse(r[(ePos + 1)..], CultureInfo.InvariantCulture);
            r = r[..ePos];
        }
        int dot = r.IndexOf('.');
        string intPart = dot >= 0 ? r[..dot] : r, fracPart = dot >= 0 ? r[(dot + 1)..] : "";
        string digits = (intPart + fracPart).TrimStart('0');
        int leadingZeros = (intPart + fracPart).Length - (intPart + fracPart).TrimStart('0').Length;
        int decimalExponent = intPart.Length - leadingZeros - 1 + exponent; // position of the first significant digit
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        string body;
        if (decimalExponent < -4 || decimalExponent >= 16)
        {
            string mantissa = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
            body = $"{mantissa}e{(decimalExponent < 0 ? '-' : '+')}{Math.Abs(decimalExponent):00}";
        }
        else if (decimalExponent < 0)
            body = "0." + new string('0', -decimalExponent - 1) + digits;
        else if (digits.Length <= decimalExponent + 1)
            body = digits + new string('0', decimalExponent + 1 - digits.Length) + ".0";
        else
            body = digits[..(decimalExponent + 1)] + "." + digits[(decimalExponent + 1)..];
        return negative ? "-" + body : body;
    }

    private static void Write(StringBuilder sb, JsonNode? node, int depth)
    {
        switch (node)
        {
            case null: sb.Append("null"); break;
            case JsonObject obj:
                if (obj.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                bool first = true;
                foreach (var (key, value) in obj.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    sb.Append(first ? "\n" : ",\n").Append(' ', (depth + 1) * 2);
                    first = false;
                    Json.AppendString(sb, key, asciiOnly: true);
                    sb.Append(": ");
                    Write(sb, value, depth + 1);
                }
                sb.Append('\n').Append(' ', depth * 2).Append('}');
                break;
            case JsonArray array:
                if (array.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < array.Count; i++)
                {
                    sb.Append(i == 0 ? "\n" : ",\n").Append(' ', (depth + 1) * 2);
                    Write(sb, array[i], depth + 1);
                }
                sb.Append('\n').Append(' ', depth * 2).Append(']');
                break;
            case JsonValue value:
                switch (value.GetValueKind())
                {
                    case JsonValueKind.String: Json.AppendString(sb, value.GetValue<string>(), asciiOnly: true); break;
                    case JsonValueKind.True: sb.Append("true"); break;
                    case JsonValueKind.False: sb.Append("false"); break;
                    case JsonValueKind.Number:
                        if (value.TryGetValue<JsonElement>(out var element)) sb.Append(element.GetRawText());
                        else if (value.TryGetValue<int>(out int i32)) sb.Append(i32.ToString(CultureInfo.InvariantCulture));
                        else if (value.TryGetValue<long>(out long i64)) sb.Append(i64.ToString(CultureInfo.InvariantCulture));
                        else sb.Append(FloatText(value.GetValue<double>()));
                        break;
                    default: sb.Append("null"); break;
                }
                break;
        }
    }
}
