using System.Globalization;
using System.Text;

namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// Python's json.dumps over the template value model, as transformers' <c>tojson</c> filter calls it:
/// <c>json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)</c>. Default
/// separators are ", " and ": " without indent, "," and ": " with it; floats print as Python's repr,
/// NaN/inf as NaN/Infinity.
/// </summary>
internal static class PyJson
{
    public static string Dumps(object? value, bool ensureAscii = false, string? indent = null, string? itemSeparator = null, string? keySeparator = null, bool sortKeys = false)
    {
        var sb = new StringBuilder();
        itemSeparator ??= indent == null ? ", " : ",";
        keySeparator ??= ": ";
        Write(sb, value, ensureAscii, indent, itemSeparator, keySeparator, sortKeys, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? v, bool ascii, string? indent, string itemSep, string keySep, bool sort, int level)
    {
        TemplateLimits.CheckValueDepth(level);
        TemplateLimits.CheckString(sb.Length, "tojson");
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : Py.FormatFloat(d));
                break;
            case string s: PythonJson.AppendString(sb, s, ascii); break;
            case IList<object?> list:
                if (list.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, indent, level + 1);
                    Write(sb, list[i], ascii, indent, itemSep, keySep, sort, level + 1);
                }
                NewLine(sb, indent, level);
                sb.Append(']');
                break;
            case Dictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                IEnumerable<KeyValuePair<string, object?>> entries = sort ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal) : dict;
                bool first = true;
                foreach (var (key, val) in entries)
                {
                    if (!first) sb.Append(itemSep);
                    first = false;
                    NewLine(sb, indent, level + 1);
                    PythonJson.AppendString(sb, key, ascii);
                    sb.Append(keySep);
                    Write(sb, val, ascii, indent, itemSep, keySep, sort, level + 1);
                }
                NewLine(sb, indent, level);
                sb.Append('}');
                break;
            default:
                throw new ChatTemplateException($"Object of type {Py.TypeName(v)} is not JSON serializable");
        }
    }

    private static void NewLine(StringBuilder sb, string? indent, int level)
    {
        if (indent == null) return;
        TemplateLimits.CheckString(sb.Length + 1 + (long)level * indent.Length, "tojson");
        sb.Append('\n');
        for (int i = 0; i < level; i++) sb.Append(indent);
    }
}
