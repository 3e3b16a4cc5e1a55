using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Data;

/// <summary>One record of a data file: its fields and where it came from (file and 1-based line).</summary>
public sealed record DataRecord(string File, int Line, JsonObject Fields)
{
    /// <summary>Where the record is, for a columnar file ("file (row N: row group G, row R)"); null for text files.</summary>
    public string? Position { get; init; }

    public string Where => Position ?? $"{File}:{Line}";
}

/// <summary>A record that could not be read, kept for the malformed-line report.</summary>
public sealed record MalformedRecord(string File, int Line, string Problem)
{
    public override string ToString() => $"{File}:{Line}: {Problem}";
}

/// <summary>How a plain-text file becomes examples.</summary>
public enum PlainTextMode
{
    /// <summary>One example per non-empty line.</summary>
    Lines,
    /// <summary>The whole file is one text, cut into max_length token chunks after tokenization.</summary>
    Whole,
}

/// <summary>
/// Reads JSONL, JSON (an array of objects, or an object holding one under "train" or "data"), CSV
/// (header row, RFC 4180 quoting) and plain text into <see cref="DataRecord"/>s. A record that is not
/// an object (bad JSON, a CSV row with the wrong column count) is reported in <c>malformed</c> when
/// skipping, else thrown as a <see cref="PeftSharpException"/> naming the file and line.
/// </summary>
public static class DataFiles
{
    /// <param name="split">The split a JSON file holding {"train": [...], "test": [...]} is read from.</param>
    public static List<DataRecord> Read(string path, string textField, PlainTextMode textMode, bool skipMalformed, List<MalformedRecord> malformed,
        string split = "train")
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Data file not found: {path}", path);
        string ext = Path.GetExtension(path).ToLowerInvariant();
        return ext switch
        {
            ".jsonl" or ".ndjson" => ReadJsonLines(path, File.ReadAllText(path), skipMalformed, malformed),
            ".json" => ReadJson(path, File.ReadAllText(path), skipMalformed, malformed, split),
            ".csv" => ReadCsv(path, File.ReadAllText(path), skipMalformed, malformed),
            ".txt" or ".text" or ".md" => ReadText(path, File.ReadAllText(path), textField, textMode),
            ".parquet" => ColumnarFiles.ReadParquet(path).ToList(),
            ".arrow" => ColumnarFiles.ReadArrow(path).ToList(),
            _ => throw new PeftSharpException($"{path}: unknown data file type '{ext}'; expected .jsonl, .json, .csv, .txt, .parquet or .arrow."),
        };
    }

    internal static void Fail(bool skip, List<MalformedRecord> malformed, string file, int line, string problem)
    {
        if (!skip) throw new PeftSharpException($"{file}:{line}: {problem} (set data.skip_malformed to skip such lines).");
        malformed.Add(new MalformedRecord(file, line, problem));
    }

    public static List<DataRecord> ReadJsonLines(string file, string content, bool skipMalformed, List<MalformedRecord> malformed)
    {
        var records = new List<DataRecord>();
        int line = 0;
        foreach (var raw in content.Split('\n'))
        {
            line++;
            string text = raw.TrimEnd('\r');
            if (string.IsNullOrWhiteSpace(text)) continue;
            JsonNode? node;
            try { node = Formats.JsonInput.ParseNode(text, "", firstLine: line); }
            catch (PeftSharpException e)
            {
                Fail(skipMalformed, malformed, file, line, e.Message[(e.Message.IndexOf(": ", StringComparison.Ordinal) + 2)..]);
                continue;
            }
            if (node is JsonObject o) records.Add(new DataRecord(file, line, o));
            else Fail(skipMalformed, malformed, file, line, $"expected a JSON object, got {Kind(node)}");
        }
        return records;
    }

    /// <summary>
    /// A JSON array of objects, or an object holding the array under the split's name (e.g. {"train": [...], "test": [...]}),
    /// else under "data".
    /// </summary>
    public static List<DataRecord> ReadJson(string file, string content, bool skipMalformed = false, List<MalformedRecord>? malformed = null,
        string split = "train")
    {
        JsonNode? root;
        var lines = new LineIndex(content);
        root = Formats.JsonInput.ParseNode(content, file, allowTrailingCommas: true);
        string? key = root is JsonObject ro ? (ro[split] is JsonArray ? split : ro["data"] is JsonArray ? "data" : null) : null;
        JsonArray? array = root is JsonArray a ? a : key != null ? (JsonArray)root![key]! : null;
        if (array == null)
        {
            var arrays = root is JsonObject obj ? obj.Where(p => p.Value is JsonArray).Select(p => p.Key).ToList() : [];
            throw new PeftSharpException(arrays.Count > 0
                ? $"{file}: holds the splits {string.Join(", ", arrays)} but not \"{split}\", the split asked for (data.dataset_train_split / dataset_test_split choose it).{Suggestions.DidYouMean(split, arrays)}"
                : $"{file}: expected a JSON array of objects, or an object with a \"{split}\" or \"data\" array.");
        }
        // Line numbers of the array's elements come from a reader pass over the same text.
        var elementLines = ElementLines(content, key);
        var records = new List<DataRecord>(array.Count);
        for (int i = 0; i < array.Count; i++)
        {
            int line = i < elementLines.Count ? lines.LineOf(elementLines[i]) : 0;
            if (array[i] is JsonObject o) records.Add(new DataRecord(file, line, (JsonObject)o.DeepClone()));
            else Fail(skipMalformed, malformed ?? [], file, line, $"element {i} is {Kind(array[i])}, expected a JSON object");
        }
        return records;
    }

    /// <summary>Byte offsets where each element of the top-level array (or of root[key]) starts.</summary>
    private static List<long> ElementLines(string content, string? key)
    {
        var offsets = new List<long>();
        var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(content), new JsonReaderOptions { AllowTrailingCommas = true });
        int arrayDepth = key == null ? 1 : 2;
        bool inTarget = key == null;
        string? lastProperty = null;
        while (reader.Read())
        {
            if (reader.TokenType == JsonTokenType.PropertyName && reader.CurrentDepth == 1) lastProperty = reader.GetString();
            if (!inTarget && reader.TokenType == JsonTokenType.StartArray && reader.CurrentDepth == 1 && lastProperty == key) { inTarget = true; continue; }
            if (inTarget && reader.CurrentDepth == arrayDepth && reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray
                or JsonTokenType.String or JsonTokenType.Number or JsonTokenType.True or JsonTokenType.False or JsonTokenType.Null)
                offsets.Add(reader.TokenStartIndex);
            if (inTarget && reader.TokenType == JsonTokenType.EndArray && reader.CurrentDepth == arrayDepth - 1) break;
        }
        return offsets;
    }

    public static List<DataRecord> ReadCsv(string file, string content, bool skipMalformed, List<MalformedRecord> malformed)
    {
        var rows = Csv.Parse(content, file);
        if (rows.Count == 0) throw new PeftSharpException($"{file}: empty CSV file; expected a header row.");
        var header = rows[0].Fields;
        var records = new List<DataRecord>(rows.Count - 1);
        foreach (var (line, fields) in rows.Skip(1))
        {
            if (fields.Count == 1 && fields[0].Length == 0) continue;
            if (fields.Count != header.Count)
            {
                Fail(skipMalformed, malformed, file, line, $"{fields.Count} columns, but the header has {header.Count}");
                continue;
            }
            var o = new JsonObject();
            for (int i = 0; i < header.Count; i++) o[header[i]] = fields[i];
            records.Add(new DataRecord(file, line, o));
        }
        return records;
    }

    public static List<DataRecord> ReadText(string file, string content, string textField, PlainTextMode mode)
    {
        if (mode == PlainTextMode.Whole)
            return content.Length == 0 ? [] : [new DataRecord(file, 1, new JsonObject { [textField] = content })];
        var records = new List<DataRecord>();
        int line = 0;
        foreach (var raw in content.Split('\n'))
        {
            line++;
            string text = raw.TrimEnd('\r');
            if (text.Trim().Length > 0) records.Add(new DataRecord(file, line, new JsonObject { [textField] = text }));
        }
        return records;
    }

    internal static string Kind(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "an object",
        JsonArray => "an array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            JsonValueKind.True or JsonValueKind.False => "a boolean",
            _ => "a value",
        },
        _ => "a value",
    };

    /// <summary>Maps UTF-8 byte offsets of a text to 1-based line numbers.</summary>
    private sealed class LineIndex
    {
        private readonly List<long> _starts = [0];

        public LineIndex(string content)
        {
            var bytes = Encoding.UTF8.GetBytes(content);
            for (int i = 0; i < bytes.Length; i++) if (bytes[i] == (byte)'\n') _starts.Add(i + 1);
        }

        public int LineOf(long offset)
        {
            int index = _starts.BinarySearch(offset);
            return (index >= 0 ? index : ~index - 1) + 1;
        }
    }
}

/// <summary>A small RFC 4180 CSV parser: comma separated, fields optionally in double quotes with "" for a quote; quoted fields may span lines.</summary>
public static class Csv
{
    /// <summary>Rows with the line each starts on.</summary>
    public static List<(int Line, List<string> Fields)> Parse(string content, string file = "csv")
    {
        var rows = new List<(int, List<string>)>();
        var fields = new List<string>();
        var field = new StringBuilder();
        int line = 1, rowLine = 1, i = 0;
        bool quoted = false, wasQuoted = false, any = false;
        if (content.Length > 0 && content[0] == '\uFEFF') i = 1;
        for (; i < content.Length; i++)
        {
            char c = content[i];
            any = true;
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < content.Length && content[i + 1] == '"') { field.Append('"'); i++; }
                    else quoted = false;
                }
                else
                {
                    if (c == '\n') line++;
                    field.Append(c);
                }
                continue;
            }
            switch (c)
            {
                case '"':
                    if (field.Length > 0 || wasQuoted)
                        throw new PeftSharpException($"{file}:{line}: a quote inside an unquoted field; quote the whole field and double the quote (\"\").");
                    quoted = wasQuoted = true;
                    break;
                case ',':
                    fields.Add(field.ToString());
                    field.Clear();
                    wasQuoted = false;
                    break;
                case '\r':
                    break;
                case '\n':
                    fields.Add(field.ToString());
                    rows.Add((rowLine, fields));
                    fields = [];
                    field.Clear();
                    wasQuoted = false;
                    any = false;
                    line++;
                    rowLine = line;
                    break;
                default:
                    if (wasQuoted) throw new PeftSharpException($"{file}:{line}: text after a closing quote; expected a comma or the end of the line.");
                    field.Append(c);
                    break;
            }
        }
        if (quoted) throw new PeftSharpException($"{file}:{rowLine}: a quoted field is not closed before the end of the file.");
        if (any || fields.Count > 0)
        {
            fields.Add(field.ToString());
            rows.Add((rowLine, fields));
        }
        return rows;
    }
}
