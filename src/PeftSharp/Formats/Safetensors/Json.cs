using System.Globalization;
using System.Text;

namespace PeftSharp.Formats.Safetensors;

/// <summary>JSON string escaping that matches other writers byte for byte.</summary>
internal static class Json
{
    /// <summary>
    /// Appends <paramref name="value"/> as a quoted JSON string. asciiOnly false escapes as Rust's
    /// serde_json does (quote, backslash, control characters; everything else raw UTF-8); true also
    /// escapes every non-ASCII UTF-16 unit as \uXXXX, as Python's json.dumps does by default.
    /// </summary>
    public static void AppendString(StringBuilder sb, string value, bool asciiOnly)
    {
        sb.Append('"');
        foreach (char c in value)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20 || (asciiOnly && c > 0x7E))
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
