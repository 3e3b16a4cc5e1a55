using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Formats;

/// <summary>
/// The one way JSON read from a user's or a stranger's file is parsed. Before anything reads it, the text
/// is checked in one reader pass: nesting at most <see cref="MaxDepth"/> levels, no key twice in an
/// object (System.Text.Json's nodes would throw on first access, far from the file), and no string with
/// a lone UTF-16 surrogate escape (<c>"\ud800"</c>, which cannot become a .NET string). Each failure is a
/// <see cref="PeftSharpException"/> naming the source, the line and the key.
/// </summary>
public static class JsonInput
{
    /// <summary>Nesting limit of objects and arrays (config files, tokenizers and data nest below 10).</summary>
    public const int MaxDepth = 64;

    /// <summary>
    /// Parses a JSON value. Errors read "<paramref name="source"/>:line: ..." (with an empty source, "line N: ...");
    /// <paramref name="firstLine"/> is the line the text starts at in its file (a JSONL line).
    /// </summary>
    public static JsonNode? ParseNode(string text, string source, bool allowTrailingCommas = false, bool allowComments = false, int firstLine = 1)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        Check(bytes, source, allowTrailingCommas, allowComments, firstLine);
        return JsonNode.Parse(bytes, documentOptions: DocumentOptions(allowTrailingCommas, allowComments));
    }

    /// <summary>Parses a JSON object (anything else at the top level is an error naming the source).</summary>
    public static JsonObject ParseObject(string text, string source, bool allowTrailingCommas = false, bool allowComments = false) =>
        ParseNode(text, source, allowTrailingCommas, allowComments) as JsonObject
            ?? throw new PeftSharpException($"{source}: expected a JSON object at the top level.");

    /// <summary>Reads a file holding a JSON object; a missing file, bad JSON or another top-level value names the file.</summary>
    public static JsonObject ReadObjectFile(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found.");
        return ParseObject(ReadText(path), path);
    }

    /// <summary>Parses a file into a <see cref="JsonDocument"/> (a UTF-8 byte order mark is allowed).</summary>
    public static JsonDocument ParseDocumentFile(string path)
    {
        var bytes = ReadBytes(path);
        var memory = bytes.AsMemory();
        if (bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF) memory = memory[3..];
        Check(memory.Span, path, false, false, 1);
        return JsonDocument.Parse(memory, DocumentOptions(false, false));
    }

    /// <summary>Parses text into a <see cref="JsonDocument"/>.</summary>
    public static JsonDocument ParseDocument(string text, string source, int firstLine = 1)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        Check(bytes, source, false, false, firstLine);
        return JsonDocument.Parse(bytes, DocumentOptions(false, false));
    }

    private static string ReadText(string path)
    {
        try { return File.ReadAllText(path, Encoding.UTF8); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new PeftSharpException($"{path}: cannot read the file ({e.Message}).", e); }
    }

    private static byte[] ReadBytes(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"{path}: file not found.");
        try { return File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new PeftSharpException($"{path}: cannot read the file ({e.Message}).", e); }
    }

    private static JsonDocumentOptions DocumentOptions(bool trailingCommas, bool comments) => new()
    {
        MaxDepth = MaxDepth + 1,
        AllowTrailingCommas = trailingCommas,
        CommentHandling = comments ? JsonCommentHandling.Skip : JsonCommentHandling.Disallow,
    };

    /// <summary>The reader pass: syntax, depth, duplicate keys and lone surrogates, with the line of each failure.</summary>
    private static void Check(ReadOnlySpan<byte> utf8, string source, bool trailingCommas, bool comments, int firstLine)
    {
        var reader = new Utf8JsonReader(utf8, new JsonReaderOptions
        {
            MaxDepth = MaxDepth + 1,
            AllowTrailingCommas = trailingCommas,
            CommentHandling = comments ? JsonCommentHandling.Skip : JsonCommentHandling.Disallow,
        });
        var keys = new Stack<HashSet<string>?>();
        var lines = new LineCounter(firstLine);
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject:
                    case JsonTokenType.StartArray:
                        if (reader.CurrentDepth >= MaxDepth)
                            throw new PeftSharpException($"{Where(source, lines.LineOf(utf8, reader.TokenStartIndex))}: JSON nested deeper than the limit of {MaxDepth} levels.");
                        keys.Push(reader.TokenType == JsonTokenType.StartObject ? new HashSet<string>(StringComparer.Ordinal) : null);
                        break;
                    case JsonTokenType.EndObject:
                    case JsonTokenType.EndArray:
                        keys.Pop();
                        break;
                    case JsonTokenType.PropertyName:
                    {
                        string name = ReadString(ref reader, utf8, source, lines, "a key");
                        if (keys.Peek() is { } seen && !seen.Add(name))
                            throw new PeftSharpException($"{Where(source, lines.LineOf(utf8, reader.TokenStartIndex))}: duplicate key \"{name}\" in one JSON object; each key may appear once.");
                        break;
                    }
                    case JsonTokenType.String:
                        if (reader.ValueIsEscaped) ReadString(ref reader, utf8, source, lines, "a string");
                        break;
                }
            }
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is long l ? Where(source, (int)l + firstLine) : source;
            throw new PeftSharpException($"{where}: not valid JSON ({e.Message}).", e);
        }
    }

    private static string ReadString(ref Utf8JsonReader reader, ReadOnlySpan<byte> utf8, string source, LineCounter lines, string what)
    {
        try { return reader.GetString()!; }
        catch (InvalidOperationException)
        {
            throw new PeftSharpException($"{Where(source, lines.LineOf(utf8, reader.TokenStartIndex))}: {what} holds an invalid escape (a lone UTF-16 surrogate such as \\ud800); expected valid Unicode text.");
        }
    }

    private static string Where(string source, int line) => source.Length == 0 ? $"line {line}" : $"{source}:{line}";

    /// <summary>Line numbers of byte offsets, asked in increasing order.</summary>
    private sealed class LineCounter(int first)
    {
        private readonly int _first = first;
        private long _offset;
        private int _line = first;

        public int LineOf(ReadOnlySpan<byte> utf8, long offset)
        {
            if (offset < _offset) { _offset = 0; _line = _first; }
            for (; _offset < offset && _offset < utf8.Length; _offset++)
                if (utf8[(int)_offset] == (byte)'\n') _line++;
            return _line;
        }
    }
}
