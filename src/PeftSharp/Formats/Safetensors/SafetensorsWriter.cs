using System.Text;
using PeftSharp.Tensors;

namespace PeftSharp.Formats.Safetensors;

/// <summary>
/// Writes safetensors files laid out exactly as the reference implementation (huggingface/safetensors,
/// used by PyTorch, transformers and PEFT) lays them out, so that the same tensors give the same bytes:
/// tensors sorted by dtype alignment (widest first, in the reference's dtype order) and then by name;
/// compact JSON header with "__metadata__" first; header padded with spaces to a multiple of 8.
/// Files are written to a temporary name beside the target and renamed into place.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>The metadata PyTorch-saved files carry: {"format": "pt"}.</summary>
    public static IReadOnlyDictionary<string, string> DefaultMetadata { get; } =
        new Dictionary<string, string> { ["format"] = "pt" };

    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/>. <paramref name="metadata"/> null means
    /// <see cref="DefaultMetadata"/>; an empty dictionary writes no "__metadata__" entry. Entries are
    /// written in data order (descending dtype alignment, then name), lazy entries' callbacks one after the
    /// other once the header is laid out; if one throws, the temporary file is deleted and
    /// <paramref name="path"/> is left as it was.
    /// </summary>
    public static void Write(string path, IEnumerable<SafetensorsEntry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var ordered = Order(tensors, path);
        byte[] header = BuildHeader(ordered, metadata ?? DefaultMetadata);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BitConverter.TryWriteBytes(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            foreach (var t in ordered) t.WriteTo(stream);
        });
    }

    /// <summary>The data order of the reference writer: descending dtype rank, then name by UTF-8 bytes.</summary>
    internal static SafetensorsEntry[] Order(IEnumerable<SafetensorsEntry> tensors, string path)
    {
        var list = tensors.ToArray();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in list)
            if (!names.Add(t.Name)) throw new ArgumentException($"{path}: tensor '{t.Name}' is given twice.", nameof(tensors));
        var keys = list.Select(t => Encoding.UTF8.GetBytes(t.Name)).ToArray();
        var index = Enumerable.Range(0, list.Length).ToArray();
        Array.Sort(index, (a, b) =>
        {
            int byRank = ReferenceRank(list[b].DType).CompareTo(ReferenceRank(list[a].DType));
            return byRank != 0 ? byRank : keys[a].AsSpan().SequenceCompareTo(keys[b]);
        });
        return index.Select(i => list[i]).ToArray();
    }

    /// <summary>Position of the dtype in the reference's Dtype enum, which is ordered by alignment.</summary>
    private static int ReferenceRank(DType dtype) => dtype switch
    {
        DType.Bool => 0, DType.U8 => 1, DType.I8 => 2, DType.I16 => 5, DType.F16 => 7, DType.BF16 => 8,
        DType.I32 => 9, DType.F32 => 11, DType.F64 => 12, DType.I64 => 13,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    /// <summary>The padded header JSON for tensors already in data order.</summary>
    internal static byte[] BuildHeader(IReadOnlyList<SafetensorsEntry> ordered, IReadOnlyDictionary<string, string> metadata)
    {
        var sb = new StringBuilder(64 + ordered.Count * 96);
        sb.Append('{');
        bool first = true;
        if (metadata.Count > 0)
        {
            sb.Append("\"__metadata__\":{");
            bool firstEntry = true;
            foreach (var (key, value) in metadata)
            {
                if (!firstEntry) sb.Append(',');
                firstEntry = false;
                PythonJson.AppendString(sb, key, asciiOnly: false);
                sb.Append(':');
                PythonJson.AppendString(sb, value, asciiOnly: false);
            }
            sb.Append('}');
            first = false;
        }
        long offset = 0;
        foreach (var t in ordered)
        {
            if (!first) sb.Append(',');
            first = false;
            PythonJson.AppendString(sb, t.Name, asciiOnly: false);
            sb.Append(":{\"dtype\":\"").Append(t.DType.SafetensorsName()).Append("\",\"shape\":[");
            for (int i = 0; i < t.Shape.Length; i++)
            {
                if (i > 0) sb.Append(',');
                sb.Append(t.Shape[i]);
            }
            sb.Append("],\"data_offsets\":[").Append(offset).Append(',').Append(offset + t.ByteLength).Append("]}");
            offset += t.ByteLength;
        }
        sb.Append('}');
        int length = Encoding.UTF8.GetByteCount(sb.ToString());
        sb.Append(' ', (8 - length % 8) % 8);
        return Encoding.UTF8.GetBytes(sb.ToString());
    }
}

/// <summary>Sharded checkpoints as transformers' save_pretrained writes them.</summary>
public static class SafetensorsShardWriter
{
    /// <summary>transformers' default max_shard_size ("5GB", decimal).</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>
    /// Writes <paramref name="tensors"/> into <paramref name="folder"/> as "{stem}.safetensors" when they
    /// fit in one shard, else as "{stem}-00001-of-0000N.safetensors" files plus "{stem}.safetensors.index.json"
    /// (metadata.total_size and a sorted weight_map). Shards fill in the given order, a new one starting when
    /// the next tensor would pass <paramref name="maxShardBytes"/>; a tensor larger than the limit gets a shard
    /// of its own (as huggingface_hub splits state dicts). Returns the files written. When writing a shard
    /// fails (e.g. a <see cref="SafetensorsEntry.FromWriter"/> callback throws), the shards already written
    /// by this call are deleted and no index is written.
    /// </summary>
    public static IReadOnlyList<string> Write(string folder, IEnumerable<SafetensorsEntry> tensors, long maxShardBytes = DefaultMaxShardBytes,
        string stem = "model", IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var shards = new List<List<SafetensorsEntry>>();
        var current = new List<SafetensorsEntry>();
        long currentBytes = 0, totalBytes = 0;
        foreach (var t in tensors)
        {
            totalBytes += t.ByteLength;
            if (t.ByteLength > maxShardBytes) { shards.Add([t]); continue; }
            if (currentBytes + t.ByteLength > maxShardBytes && current.Count > 0)
            {
                shards.Add(current);
                current = [];
                currentBytes = 0;
            }
            current.Add(t);
            currentBytes += t.ByteLength;
        }
        if (current.Count > 0 || shards.Count == 0) shards.Add(current);

        Directory.CreateDirectory(folder);
        if (shards.Count == 1)
        {
            string single = Path.Combine(folder, stem + ".safetensors");
            SafetensorsWriter.Write(single, shards[0], metadata);
            return [single];
        }
        var written = new List<string>();
        var weightMap = new System.Text.Json.Nodes.JsonObject();
        try
        {
            for (int i = 0; i < shards.Count; i++)
            {
                string name = $"{stem}-{i + 1:00000}-of-{shards.Count:00000}.safetensors";
                string path = Path.Combine(folder, name);
                SafetensorsWriter.Write(path, shards[i], metadata);
                written.Add(path);
                foreach (var t in shards[i]) weightMap[t.Name] = name;
            }
        }
        catch
        {
            foreach (string path in written)
                try { File.Delete(path); } catch (IOException) { }
            throw;
        }
        var index = new System.Text.Json.Nodes.JsonObject
        {
            ["metadata"] = new System.Text.Json.Nodes.JsonObject { ["total_size"] = totalBytes },
            ["weight_map"] = weightMap,
        };
        string indexPath = Path.Combine(folder, stem + ".safetensors.index.json");
        PythonJson.WriteFile(indexPath, index);
        written.Add(indexPath);
        return written;
    }
}
