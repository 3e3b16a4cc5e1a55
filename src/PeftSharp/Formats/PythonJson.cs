using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Formats;

/// <summary>
/// Writes JSON exactly as Python's <c>json.dumps(obj, indent=2, sort_keys=True)</c> does (ASCII
/// escapes, <c>repr</c> floats such as <c>0.0</c> and <c>1e-05</c>), so that files PEFT and
/// transformers write (adapter_config.json, config.json) round-trip byte for byte.
/// </summary>
public static class PythonJson
{
    public static string Serialize(JsonNode? node, int indent = 2, bool sortKeys = true)
    {
        var sb = new StringBuilder();
        Write(sb, node, indent, sortKeys, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, JsonNode? node, int indent, bool sortKeys, int depth)
    {
        switch (node)
        {
            case null:
                sb.Append("null");
                break;
            case JsonObject obj:
                if (obj.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                IEnumerable<KeyValuePair<string, JsonNode?>> entries = obj;
                if (sortKeys) entries = entries.OrderBy(e => e.Key, StringComparer.Ordinal);
                bool first = true;
                foreach (var (key, value) in entries)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    NewLine(sb, indent, depth + 1);
                    AppendString(sb, key);
                    sb.Append(": ");
                    Write(sb, value, indent, sortKeys, depth + 1);
                }
                NewLine(sb, indent, depth);
                sb.Append('}');
                break;
            case JsonArray array:
                if (array.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < array.Count; i++)
                {
                    if (i > 0) sb.Append(',');
                    NewLine(sb, indent, depth + 1);
                    Write(sb, array[i], indent, sortKeys, depth + 1);
                }
                NewLine(sb, indent, depth);
                sb.Append(']');
                break;
            case JsonValue value:
                WriteValue(sb, value);
                break;
        }
    }

    private static void NewLine(StringBuilder sb, int indent, int depth)
    {
        sb.Append('\n');
        sb.Append(' ', indent * depth);
    }

    private static void WriteValue(StringBuilder sb, JsonValue value)
    {
        var element = value.GetValue<object>();
        switch (element)
        {
            case JsonElement e:
                switch (e.ValueKind)
                {
                    case JsonValueKind.String: AppendString(sb, e.GetString()!); return;
                    case JsonValueKind.True: sb.Append("true"); return;
                    case JsonValueKind.False: sb.Append("false"); return;
                    case JsonValueKind.Null: sb.Append("null"); return;
                    case JsonValueKind.Number:
                        var raw = e.GetRawText();
                        if (raw.IndexOfAny(['.', 'e', 'E']) < 0) sb.Append(raw);
                        else sb.Append(FormatFloat(e.GetDouble()));
                        return;
                }
                break;
            case string s: AppendString(sb, s); return;
            case bool b: sb.Append(b ? "true" : "false"); return;
            case int or long or short or byte or sbyte or uint or ulong or ushort:
                sb.Append(Convert.ToString(element, CultureInfo.InvariantCulture)); return;
            case double d: sb.Append(FormatFloat(d)); return;
            case float f: sb.Append(FormatFloat(f)); return;
            case decimal m: sb.Append(FormatFloat((double)m)); return;
        }
        throw new ArgumentException($"Cannot write a JSON value of type {element.GetType().Name}.");
    }

    /// <summary>Writes <paramref name="node"/> as transformers' save_pretrained writes config.json: json.dumps(indent=2, sort_keys=True) and a newline.</summary>
    public static void WriteFile(string path, JsonNode node) => AtomicFile.WriteAllText(path, Serialize(node) + "\n");

    /// <summary>A number node whose JSON text is Python's repr of the float (1e-05, 10000.0), so it stays a float when written.</summary>
    public static JsonNode Float(double value) => JsonNode.Parse(FormatFloat(value))!;

    /// <summary>Python's <c>repr(float)</c>: shortest round-trip digits, exponent form below 1e-4 or from 1e16.</summary>
    public static string FormatFloat(double value)
    {
        if (double.IsNaN(value)) return "NaN";
        if (double.IsPositiveInfinity(value)) return "Infinity";
        if (double.IsNegativeInfinity(value)) return "-Infinity";
        if (value == 0) return double.IsNegative(value) ? "-0.0" : "0.0";

        // Shortest round-trip digits and decimal exponent from .NET's "E16"-free round-trip form.
        string r = Math.Abs(value).ToString("R", CultureInfo.InvariantCulture);
        string mantissa = r;
        int exp = 0;
        int ePos = r.IndexOfAny(['E', 'e']);
        if (ePos >= 0)
        {
            mantissa = r[..ePos];
            exp = int.Parse(r[(ePos + 1)..], CultureInfo.InvariantCulture);
        }
        int dot = mantissa.IndexOf('.');
        string digits = dot < 0 ? mantissa : mantissa.Remove(dot, 1);
        int pointPos = (dot < 0 ? mantissa.Length : dot) + exp; // decimal point position within digits
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') { lead++; pointPos--; }
        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int decimalExponent = pointPos - 1; // value = d.ddd × 10^decimalExponent

        var sb = new StringBuilder();
        if (value < 0) sb.Append('-');
        if (decimalExponent < -4 || decimalExponent >= 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(decimalExponent < 0 ? '-' : '+');
            sb.Append(Math.Abs(decimalExponent).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPos <= 0)
        {
            sb.Append("0.").Append('0', -pointPos).Append(digits);
        }
        else if (pointPos >= digits.Length)
        {
            sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }
        return sb.ToString();
    }

    /// <summary>
    /// Appends <paramref name="value"/> as a quoted JSON string: quote, backslash and control characters
    /// escaped as Python's json and Rust's serde_json both do; with <paramref name="asciiOnly"/> every
    /// non-ASCII UTF-16 unit too (json.dumps' default ensure_ascii=True).
    /// </summary>
    public static void AppendString(StringBuilder sb, string value, bool asciiOnly = true)
    {
        sb.Append('"');
        foreach (char c in value)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (asciiOnly && c > 0x7e)) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
