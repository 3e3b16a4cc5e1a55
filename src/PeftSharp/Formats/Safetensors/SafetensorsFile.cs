using System.IO.MemoryMappedFiles;
using System.Text.Json;
using PeftSharp.Tensors;

namespace PeftSharp.Formats.Safetensors;

/// <summary>
/// A .safetensors file opened read-only through a memory mapping. The header is parsed and fully
/// validated on open (so a truncated or malformed file is refused before any tensor is touched);
/// tensor bytes are read lazily, straight from the mapping.
/// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data buffer.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted, as in the reference implementation (100 MB).</summary>
    public const long MaxHeaderLength = 100_000_000;

    private const string MetadataKey = "__metadata__";

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;
    private readonly SafetensorsTensor[] _tensors;
    private readonly Dictionary<string, SafetensorsTensor> _byName;

    private SafetensorsFile(string path, long fileLength, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePointer)
    {
        Path = path;
        FileLength = fileLength;
        _map = map;
        _view = view;
        _base = basePointer;
        HeaderLength = (long)BitConverter.ToUInt64(new ReadOnlySpan<byte>(basePointer, 8)); // validated by Open
        var (metadata, tensors) = ParseHeader(new ReadOnlySpan<byte>(basePointer + 8, (int)HeaderLength));
        Metadata = metadata;
        _byName = new Dictionary<string, SafetensorsTensor>(tensors.Count, StringComparer.Ordinal);
        foreach (var t in tensors)
            if (!_byName.TryAdd(t.Name, t)) throw Error($"tensor '{t.Name}' appears twice in the header; names must be unique");
        _tensors = Validate(tensors);
    }

    /// <summary>Opens and validates <paramref name="path"/>; throws <see cref="PeftSharpException"/> naming the file (and tensor) when it is not a valid safetensors file.</summary>
    public static SafetensorsFile Open(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        if (!System.IO.File.Exists(path)) throw new PeftSharpException($"{path}: safetensors file not found.");
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = stream.Length;
        if (length < 8)
        {
            stream.Dispose();
            throw new PeftSharpException($"{path}: not a safetensors file: {length} bytes, shorter than the 8-byte header length.");
        }
        var map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        MemoryMappedViewAccessor? view = null;
        byte* pointer = null;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointer += view.PointerOffset;
            ulong headerLength = BitConverter.ToUInt64(new ReadOnlySpan<byte>(pointer, 8));
            if (headerLength > MaxHeaderLength)
                throw new PeftSharpException($"{path}: not a safetensors file: header length {headerLength} is above the {MaxHeaderLength}-byte limit.");
            if ((long)headerLength > length - 8)
                throw new PeftSharpException($"{path}: header length {headerLength} runs past the end of the {length}-byte file (truncated or not a safetensors file).");
            return new SafetensorsFile(path, length, map, view, pointer);
        }
        catch
        {
            if (pointer != null) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    public string Path { get; }
    public long FileLength { get; }

    /// <summary>Length of the JSON header in bytes (padding included).</summary>
    public long HeaderLength { get; }

    /// <summary>Byte offset in the file where the data buffer starts (8 + header).</summary>
    public long DataOffset => 8 + HeaderLength;

    /// <summary>The "__metadata__" entries in header order; empty when the header has none.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensors in data-buffer order.</summary>
    public IReadOnlyList<SafetensorsTensor> Tensors => _tensors;

    public IEnumerable<string> Names => _tensors.Select(t => t.Name);

    public bool Contains(string name) => _byName.ContainsKey(name);

    public bool TryGetTensor(string name, out SafetensorsTensor tensor) => _byName.TryGetValue(name, out tensor!);

    /// <summary>The tensor called <paramref name="name"/>; throws <see cref="PeftSharpException"/> naming the file when absent.</summary>
    public SafetensorsTensor this[string name] => _byName.TryGetValue(name, out var t)
        ? t
        : throw new PeftSharpException($"{Path}: no tensor named '{name}' ({_tensors.Length} tensors in the file).");

    internal byte* DataPointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_base == null, this);
            return _base + DataOffset;
        }
    }

    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    private PeftSharpException Error(string message) => new($"{Path}: {message}.");

    private (IReadOnlyDictionary<string, string>, List<SafetensorsTensor>) ParseHeader(ReadOnlySpan<byte> json)
    {
        var metadata = new OrderedDictionary<string, string>(StringComparer.Ordinal);
        var tensors = new List<SafetensorsTensor>();
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw Error("the header is not a JSON object");
            bool sawMetadata = false;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                string name = reader.GetString()!;
                reader.Read();
                if (name == MetadataKey)
                {
                    if (sawMetadata) throw Error("\"__metadata__\" appears twice in the header");
                    sawMetadata = true;
                    ReadMetadata(ref reader, metadata);
                }
                else tensors.Add(ReadTensor(ref reader, name));
            }
            if (reader.Read()) throw Error("unexpected content after the header's JSON object");
        }
        catch (JsonException e)
        {
            throw new PeftSharpException($"{Path}: the header is not valid JSON (byte {e.BytePositionInLine} of the header): {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new PeftSharpException($"{Path}: the header is not valid JSON: {e.Message}", e);
        }
        return (metadata, tensors);
    }

    private void ReadMetadata(ref Utf8JsonReader reader, OrderedDictionary<string, string> metadata)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw Error("\"__metadata__\" must be an object of strings");
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            string key = reader.GetString()!;
            reader.Read();
            if (reader.TokenType != JsonTokenType.String) throw Error($"\"__metadata__\" entry '{key}' must be a string, found {reader.TokenType}");
            if (!metadata.TryAdd(key, reader.GetString()!)) throw Error($"\"__metadata__\" entry '{key}' appears twice");
        }
    }

    private SafetensorsTensor ReadTensor(ref Utf8JsonReader reader, string name)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw Error($"tensor '{name}': expected an object with dtype, shape and data_offsets");
        string? dtypeName = null;
        long[]? shape = null, offsets = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            string key = reader.GetString()!;
            reader.Read();
            switch (key)
            {
                case "dtype":
                    if (reader.TokenType != JsonTokenType.String) throw Error($"tensor '{name}': dtype must be a string");
                    dtypeName = reader.GetString();
                    break;
                case "shape": shape = ReadLongs(ref reader, name, "shape"); break;
                case "data_offsets": offsets = ReadLongs(ref reader, name, "data_offsets"); break;
                default: reader.Skip(); break;
            }
        }
        if (dtypeName == null || shape == null || offsets == null)
            throw Error($"tensor '{name}': missing {(dtypeName == null ? "dtype" : shape == null ? "shape" : "data_offsets")}");
        if (!DTypeExtensions.TryParseSafetensorsName(dtypeName, out var dtype))
            throw Error($"tensor '{name}': unsupported dtype '{dtypeName}' (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)");
        if (offsets.Length != 2) throw Error($"tensor '{name}': data_offsets must hold two numbers, found {offsets.Length}");
        if (offsets[1] < offsets[0]) throw Error($"tensor '{name}': data_offsets [{offsets[0]}, {offsets[1]}] end before they start");
        long bytes;
        try
        {
            long count = 1;
            foreach (long d in shape) count = checked(count * d);
            bytes = checked(count * dtype.Size());
        }
        catch (OverflowException)
        {
            throw Error($"tensor '{name}': shape [{string.Join(", ", shape)}] is too large");
        }
        if (bytes != offsets[1] - offsets[0])
            throw Error($"tensor '{name}': shape [{string.Join(", ", shape)}] of {dtypeName} needs {bytes} bytes but data_offsets [{offsets[0]}, {offsets[1]}] span {offsets[1] - offsets[0]}");
        return new SafetensorsTensor(this, name, dtype, shape, offsets[0], offsets[1]);
    }

    private long[] ReadLongs(ref Utf8JsonReader reader, string name, string key)
    {
        if (reader.TokenType != JsonTokenType.StartArray) throw Error($"tensor '{name}': {key} must be an array of integers");
        var values = new List<long>(4);
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long v))
                throw Error($"tensor '{name}': {key} must be an array of integers");
            if (v < 0) throw Error($"tensor '{name}': {key} holds a negative value ({v})");
            values.Add(v);
        }
        return values.ToArray();
    }

    /// <summary>Sorts by offset and checks that the tensors tile the data buffer exactly, with no gap or overlap.</summary>
    private SafetensorsTensor[] Validate(List<SafetensorsTensor> tensors)
    {
        var sorted = tensors.ToArray();
        Array.Sort(sorted, (a, b) => a.DataStart != b.DataStart ? a.DataStart.CompareTo(b.DataStart) : a.DataEnd.CompareTo(b.DataEnd));
        long end = 0;
        SafetensorsTensor? previous = null;
        foreach (var t in sorted)
        {
            if (t.DataStart < end)
                throw Error($"tensor '{t.Name}': data_offsets [{t.DataStart}, {t.DataEnd}] overlap tensor '{previous!.Name}' [{previous.DataStart}, {previous.DataEnd}]");
            if (t.DataStart > end)
                throw Error($"tensor '{t.Name}': data_offsets start at {t.DataStart}, leaving a gap after byte {end}" + (previous == null ? "" : $" (end of '{previous.Name}')"));
            end = t.DataEnd;
            previous = t;
        }
        long available = FileLength - DataOffset;
        if (end > available)
            throw Error($"tensor '{previous!.Name}': data_offsets end at {end} but the file holds only {available} data bytes (truncated?)");
        if (end < available)
            throw Error($"the tensors cover {end} data bytes but the file holds {available} after the header (trailing bytes)");
        return sorted;
    }
}
