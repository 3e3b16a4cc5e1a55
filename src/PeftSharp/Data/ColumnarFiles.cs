using System.Collections;
using System.Text.Json.Nodes;
using Apache.Arrow;
using Apache.Arrow.Ipc;
using Apache.Arrow.Types;
using Parquet;
using Parquet.Serialization;

namespace PeftSharp.Data;

/// <summary>
/// Reads columnar data files into <see cref="DataRecord"/>s: Parquet (through Parquet.Net, one row group at a
/// time, so memory is bounded by a row group; flat and nested columns, every compression Parquet.Net reads:
/// snappy, zstd, gzip, lz4, brotli) and Arrow IPC (the stream format `datasets`' save_to_disk writes, or the
/// file format). A record's <see cref="DataRecord.Line"/> is its 1-based row in the file and its
/// <see cref="DataRecord.Where"/> names the row group and row.
/// </summary>
public static class ColumnarFiles
{
    private static readonly ParquetOptions Options = new() { TreatByteArrayAsString = false };

    /// <summary>
    /// The rows of the files when every one of them is Parquet (the count is in its footer, read without any data); null
    /// otherwise, or when a footer does not read (the error comes when the rows are read).
    /// </summary>
    public static long? CountRows(IEnumerable<string> files)
    {
        long total = 0;
        foreach (var file in files)
        {
            if (!string.Equals(Path.GetExtension(file), ".parquet", StringComparison.OrdinalIgnoreCase)) return null;
            try
            {
                using var stream = File.OpenRead(file);
                var reader = ParquetReader.CreateAsync(stream, Options).GetAwaiter().GetResult();
                for (int g = 0; g < reader.RowGroupCount; g++) total += reader.RowGroups[g].RowCount;
                reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is not PeftSharpException) { return null; }
        }
        return total;
    }

    /// <summary>Every row of a Parquet file, read a row group at a time.</summary>
    public static IEnumerable<DataRecord> ReadParquet(string path)
    {
        using var stream = File.OpenRead(path);
        int groups;
        try
        {
            var reader = ParquetReader.CreateAsync(stream, Options, leaveStreamOpen: true).GetAwaiter().GetResult();
            groups = reader.RowGroupCount;
            reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not PeftSharpException)
        {
            throw new PeftSharpException($"{path}: not a readable Parquet file ({e.Message}); a download may have been cut short: fetch it again.", e);
        }
        int row = 0;
        for (int g = 0; g < groups; g++)
        {
            IList<Dictionary<string, object>> rows;
            try
            {
                stream.Position = 0;
                rows = ParquetSerializer.DeserializeUntypedAsync(stream, Options, g).GetAwaiter().GetResult().Data;
            }
            catch (Exception e) when (e is not PeftSharpException)
            {
                throw new PeftSharpException($"{path}: row group {g} of {groups} cannot be read ({e.Message}); the file may be corrupt or truncated.", e);
            }
            for (int r = 0; r < rows.Count; r++, row++)
            {
                string where = $"{path} (row {row}: row group {g}, row {r})";
                yield return new DataRecord(path, row + 1, ToObject(rows[r], where)) { Position = where };
            }
        }
    }

    /// <summary>Every row of an Arrow IPC file (stream format, as `datasets` writes, or file format).</summary>
    public static IEnumerable<DataRecord> ReadArrow(string path)
    {
        using var stream = File.OpenRead(path);
        var magic = new byte[6];
        int n = stream.Read(magic);
        stream.Position = 0;
        bool fileFormat = n == 6 && System.Text.Encoding.ASCII.GetString(magic) == "ARROW1";
        ArrowStreamReader reader;
        try { reader = fileFormat ? new ArrowFileReader(stream, leaveOpen: true) : new ArrowStreamReader(stream, leaveOpen: true); }
        catch (Exception e) when (e is not PeftSharpException)
        {
            throw new PeftSharpException($"{path}: not a readable Arrow file ({e.Message}).", e);
        }
        using (reader)
        {
            int row = 0, batchIndex = 0;
            while (true)
            {
                RecordBatch? batch;
                try { batch = reader.ReadNextRecordBatch(); }
                catch (Exception e) when (e is not PeftSharpException)
                {
                    throw new PeftSharpException($"{path}: record batch {batchIndex} cannot be read ({e.Message}); the file may be corrupt or truncated.", e);
                }
                if (batch == null) yield break;
                using (batch)
                {
                    var fields = batch.Schema.FieldsList;
                    for (int r = 0; r < batch.Length; r++, row++)
                    {
                        string where = $"{path} (row {row}: record batch {batchIndex}, row {r})";
                        var o = new JsonObject();
                        for (int c = 0; c < fields.Count; c++)
                            o[fields[c].Name] = ArrowValue(batch.Column(c), r, where, fields[c].Name);
                        yield return new DataRecord(path, row + 1, o) { Position = where };
                    }
                }
                batchIndex++;
            }
        }
    }

    private static JsonObject ToObject(IDictionary<string, object> values, string where, string? parent = null)
    {
        var o = new JsonObject();
        foreach (var (key, value) in values) o[key] = ToNode(value, where, parent == null ? key : $"{parent}.{key}");
        return o;
    }

    private static JsonNode? ToNode(object? value, string where, string column) => value switch
    {
        null => null,
        string s => JsonValue.Create(s),
        ReadOnlyMemory<char> m => JsonValue.Create(m.ToString()),
        bool b => JsonValue.Create(b),
        sbyte or byte or short or ushort or int => JsonValue.Create(Convert.ToInt32(value)),
        uint or long => JsonValue.Create(Convert.ToInt64(value)),
        ulong u => JsonValue.Create(u),
        float f => JsonValue.Create(f),
        double d => JsonValue.Create(d),
        decimal m => JsonValue.Create(m),
        DateTime t => JsonValue.Create(t.ToString("o")),
        DateOnly t => JsonValue.Create(t.ToString("yyyy-MM-dd")),
        TimeSpan t => JsonValue.Create(t.ToString()),
        Guid g => JsonValue.Create(g.ToString()),
        byte[] or ReadOnlyMemory<byte> => throw Binary(where, column),
        IDictionary<string, object> d => ToObject(d, where, column),
        IEnumerable e => new JsonArray(e.Cast<object?>().Select((v, i) => ToNode(v, where, $"{column}[{i}]")).ToArray()),
        _ => throw new PeftSharpException($"{where}: column \"{column}\" holds {value.GetType().Name} values; PeftSharp reads text, numbers, booleans, dates, lists and structs."),
    };

    private static PeftSharpException Binary(string where, string column) =>
        new($"{where}: column \"{column}\" holds binary data (images, audio or bytes); PeftSharp trains on text and reads text, numbers, booleans, lists and structs. Remove the column or choose a text dataset.");

    private static JsonNode? ArrowValue(IArrowArray array, int i, string where, string column)
    {
        if (array.IsNull(i)) return null;
        switch (array)
        {
            case StringArray s: return JsonValue.Create(s.GetString(i));
            case LargeStringArray s: return JsonValue.Create(s.GetString(i));
            case StringViewArray s: return JsonValue.Create(s.GetString(i));
            case BooleanArray b: return JsonValue.Create(b.GetValue(i));
            case Int8Array a: return JsonValue.Create((int)a.GetValue(i)!.Value);
            case Int16Array a: return JsonValue.Create((int)a.GetValue(i)!.Value);
            case Int32Array a: return JsonValue.Create(a.GetValue(i)!.Value);
            case Int64Array a: return JsonValue.Create(a.GetValue(i)!.Value);
            case UInt8Array a: return JsonValue.Create((int)a.GetValue(i)!.Value);
            case UInt16Array a: return JsonValue.Create((int)a.GetValue(i)!.Value);
            case UInt32Array a: return JsonValue.Create((long)a.GetValue(i)!.Value);
            case UInt64Array a: return JsonValue.Create(a.GetValue(i)!.Value);
            case FloatArray a: return JsonValue.Create(a.GetValue(i)!.Value);
            case DoubleArray a: return JsonValue.Create(a.GetValue(i)!.Value);
            case ListArray l:
            {
                var values = l.Values;
                int start = l.ValueOffsets[i], end = l.ValueOffsets[i + 1];
                var items = new JsonNode?[end - start];
                for (int k = start; k < end; k++) items[k - start] = ArrowValue(values, k, where, $"{column}[{k - start}]");
                return new JsonArray(items);
            }
            case LargeListArray l:
            {
                var values = l.Values;
                long start = l.ValueOffsets[i], end = l.ValueOffsets[i + 1];
                var items = new JsonNode?[end - start];
                for (long k = start; k < end; k++) items[k - start] = ArrowValue(values, checked((int)k), where, $"{column}[{k - start}]");
                return new JsonArray(items);
            }
            case FixedSizeListArray l:
            {
                int size = ((FixedSizeListType)l.Data.DataType).ListSize;
                var items = new JsonNode?[size];
                for (int k = 0; k < size; k++) items[k] = ArrowValue(l.Values, (l.Offset + i) * size + k, where, $"{column}[{k}]");
                return new JsonArray(items);
            }
            case StructArray s:
            {
                var type = (StructType)s.Data.DataType;
                var o = new JsonObject();
                for (int f = 0; f < type.Fields.Count; f++)
                    o[type.Fields[f].Name] = ArrowValue(s.Fields[f], i, where, $"{column}.{type.Fields[f].Name}");
                return o;
            }
            case BinaryArray:
                throw Binary(where, column);
            default:
                throw new PeftSharpException($"{where}: column \"{column}\" has Arrow type {array.Data.DataType.Name}; PeftSharp reads strings, integers, floats, booleans, lists and structs.");
        }
    }
}
