using System.Text;
using System.Text.Json;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>A Hugging Face decoder: turns the token strings of ids back into text, step by step (decode_chain).</summary>
internal abstract class Decoder
{
    public abstract List<string> DecodeChain(List<string> tokens);

    public string Decode(List<string> tokens) => string.Concat(DecodeChain(tokens));

    public static Decoder? FromJson(JsonElement e, string file)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = Json.String(e, "type", file);
        return type switch
        {
            "Sequence" => new SequenceDecoder(Json.Array(e, "decoders", file).EnumerateArray()
                .Select(x => FromJson(x, file) ?? throw new PeftSharpException($"{file}: a null decoder inside a Sequence.")).ToArray()),
            "ByteLevel" => new ByteLevelDecoder(),
            "Metaspace" => new MetaspaceDecoder(Json.Replacement(e, file), Json.PrependScheme(e, file)),
            "Replace" => ReplaceDecoder.Parse(e, file),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(StripContent(e, file), Json.Int(e, "start", 0), Json.Int(e, "stop", 0)),
            _ => throw new PeftSharpException($"{file}: decoder type '{type}' is not supported (expected ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip or Sequence)."),
        };
    }

    private static char StripContent(JsonElement e, string file)
    {
        string c = Json.String(e, "content", file);
        return c.Length == 1 ? c[0] : throw new PeftSharpException($"{file}: Strip decoder 'content' must be one character, got '{c}'.");
    }
}

internal sealed class SequenceDecoder(Decoder[] children) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        foreach (var child in children) tokens = child.DecodeChain(tokens);
        return tokens;
    }
}

/// <summary>Byte-level characters back to bytes, then UTF-8 (invalid sequences become U+FFFD).</summary>
internal sealed class ByteLevelDecoder : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var token in tokens)
        {
            bool allMapped = true;
            foreach (char c in token)
                if (ByteLevel.CharToByte(c) < 0) { allMapped = false; break; }
            if (allMapped)
                foreach (char c in token) bytes.Add((byte)ByteLevel.CharToByte(c));
            else
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
        }
        return [Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes))];
    }
}

/// <summary>The replacement character back to spaces; the first token loses its prefix space.</summary>
internal sealed class MetaspaceDecoder(char replacement, PrependScheme scheme) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        var sb = new StringBuilder();
        for (int i = 0; i < tokens.Count; i++)
        {
            sb.Clear();
            foreach (char c in tokens[i])
            {
                if (c != replacement) sb.Append(c);
                else if (i != 0 || scheme == PrependScheme.Never) sb.Append(' ');
            }
            output.Add(sb.ToString());
        }
        return output;
    }
}

internal sealed class ReplaceDecoder(string pattern, string content) : Decoder
{
    public static ReplaceDecoder Parse(JsonElement e, string file)
    {
        var p = e.GetProperty("pattern");
        if (!p.TryGetProperty("String", out var s))
            throw new PeftSharpException($"{file}: only String patterns are supported in the Replace decoder.");
        return new ReplaceDecoder(s.GetString()!, Json.String(e, "content", file));
    }

    public override List<string> DecodeChain(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        foreach (var t in tokens) output.Add(pattern.Length == 0 ? t : t.Replace(pattern, content, StringComparison.Ordinal));
        return output;
    }
}

/// <summary>Runs of &lt;0xNN&gt; tokens back to UTF-8 text; an invalid run gives one U+FFFD per byte.</summary>
internal sealed class ByteFallbackDecoder : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        var pending = new List<byte>();
        foreach (var token in tokens)
        {
            if (TryParseByte(token, out byte b)) { pending.Add(b); continue; }
            Flush();
            output.Add(token);
        }
        Flush();
        return output;

        void Flush()
        {
            if (pending.Count == 0) return;
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending);
            if (System.Text.Unicode.Utf8.IsValid(span)) output.Add(Encoding.UTF8.GetString(span));
            else for (int i = 0; i < pending.Count; i++) output.Add("\uFFFD");
            pending.Clear();
        }
    }

    internal static bool TryParseByte(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}

internal sealed class FuseDecoder : Decoder
{
    public override List<string> DecodeChain(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing <c>content</c> characters from each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : Decoder
{
    public override List<string> DecodeChain(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        foreach (var t in tokens)
        {
            int begin = 0, end = t.Length;
            while (begin < start && begin < end && t[begin] == content) begin++;
            int cut = 0;
            while (cut < stop && end > begin && t[end - 1] == content) { end--; cut++; }
            output.Add(t[begin..end]);
        }
        return output;
    }
}
