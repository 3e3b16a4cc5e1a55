using System.Text;
using System.Text.Json;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>A Hugging Face normalizer: rewrites each piece of text between added tokens.</summary>
internal abstract class Normalizer
{
    public abstract string Normalize(string text);

    public static Normalizer? FromJson(JsonElement e, string file)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = Json.String(e, "type", file);
        return type switch
        {
            "Sequence" => new SequenceNormalizer(Json.Array(e, "normalizers", file).EnumerateArray()
                .Select(x => FromJson(x, file) ?? throw new PeftSharpException($"{file}: a null normalizer inside a Sequence.")).ToArray()),
            "NFC" => new NfcNormalizer(),
            "Prepend" => new PrependNormalizer(Json.String(e, "prepend", file)),
            "Replace" => ReplaceNormalizer.Parse(e, file),
            "Lowercase" => new LowercaseNormalizer(),
            "Strip" => new StripNormalizer(Json.Bool(e, "strip_left", true), Json.Bool(e, "strip_right", true)),
            _ => throw new PeftSharpException($"{file}: normalizer type '{type}' is not supported (expected NFC, Prepend, Replace, Lowercase, Strip or Sequence)."),
        };
    }
}

internal sealed class SequenceNormalizer(Normalizer[] children) : Normalizer
{
    public override string Normalize(string text)
    {
        foreach (var child in children) text = child.Normalize(text);
        return text;
    }
}

internal sealed class NfcNormalizer : Normalizer
{
    public override string Normalize(string text) => UnicodeNfc.Normalize(text);
}

/// <summary>Prepends a string to non-empty text.</summary>
internal sealed class PrependNormalizer(string prepend) : Normalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prepend + text;
}

internal sealed class LowercaseNormalizer : Normalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

internal sealed class StripNormalizer(bool left, bool right) : Normalizer
{
    public override string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

/// <summary>Replaces every match of a string or regex pattern.</summary>
internal sealed class ReplaceNormalizer(string? literal, SplitRegex? regex, string content) : Normalizer
{
    public static ReplaceNormalizer Parse(JsonElement e, string file)
    {
        var pattern = Json.Object(e, "pattern", file);
        string content = Json.String(e, "content", file);
        if (pattern.TryGetProperty("String", out _)) return new ReplaceNormalizer(Json.String(pattern, "String", file), null, content);
        return new ReplaceNormalizer(null, new SplitRegex(Json.String(pattern, "Regex", file), false, file), content);
    }

    public override string Normalize(string text)
    {
        if (literal != null) return literal.Length == 0 ? text : text.Replace(literal, content, StringComparison.Ordinal);
        var matches = new List<(int Start, int End)>();
        regex!.Matches(text, matches);
        if (matches.Count == 0) return text;
        var sb = new StringBuilder(text.Length);
        int previous = 0;
        foreach (var (s, e) in matches)
        {
            sb.Append(text, previous, s - previous).Append(content);
            previous = e;
        }
        return sb.Append(text, previous, text.Length - previous).ToString();
    }
}
