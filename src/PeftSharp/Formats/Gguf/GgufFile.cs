using System.Text;

namespace PeftSharp.Formats.Gguf;

/// <summary>One tensor of a GGUF file: ggml dimensions (ne[0], the row length, first), type, and absolute offset of its bytes.</summary>
public sealed record GgufTensor(string Name, long[] Dimensions, GgmlType Type, long Offset, long ByteLength)
{
    public long ElementCount => Dimensions.Aggregate(1L, (a, d) => a * d);
}

/// <summary>
/// A GGUF file read back: its version, metadata and tensor infos (the header is read whole; tensor bytes are
/// read on demand). A file that is not GGUF, is cut short, holds an unknown value or tensor type, or gives a
/// tensor an offset outside the data section is refused with a <see cref="PeftSharpException"/> naming the
/// file, the byte offset or key, and what was expected.
/// </summary>
public sealed class GgufFile
{
    private readonly Dictionary<string, GgufValue> _metadata;
    private readonly Dictionary<string, GgufTensor> _byName;

    private GgufFile(string path, uint version, List<KeyValuePair<string, GgufValue>> metadata, List<GgufTensor> tensors, int alignment, long dataOffset)
    {
        Path = path;
        Version = version;
        MetadataInOrder = metadata;
        _metadata = metadata.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Alignment = alignment;
        DataOffset = dataOffset;
    }

    public string Path { get; }
    public uint Version { get; }
    public IReadOnlyList<KeyValuePair<string, GgufValue>> MetadataInOrder { get; }
    public IReadOnlyDictionary<string, GgufValue> Metadata => _metadata;
    public IReadOnlyList<GgufTensor> Tensors { get; }
    public int Alignment { get; }

    /// <summary>Absolute offset of the data section (tensor offsets in the file are relative to it).</summary>
    public long DataOffset { get; }

    public GgufTensor Tensor(string name) => _byName.TryGetValue(name, out var t) ? t
        : throw new PeftSharpException($"{Path}: no tensor '{name}'.{Suggestions.DidYouMean(name, _byName.Keys)}");

    public bool TryGetTensor(string name, out GgufTensor tensor) => _byName.TryGetValue(name, out tensor!);

    /// <summary>A metadata value as <typeparamref name="T"/> (string, uint, float, bool, string[], float[], int[] ...).</summary>
    public T Get<T>(string key)
    {
        if (!_metadata.TryGetValue(key, out var v)) throw new PeftSharpException($"{Path}: no metadata key '{key}'.");
        return v.Value is T t ? t : throw new PeftSharpException($"{Path}: metadata '{key}' is a {v.Type}, not a {typeof(T).Name}.");
    }

    public bool TryGet<T>(string key, out T value)
    {
        if (_metadata.TryGetValue(key, out var v) && v.Value is T t) { value = t; return true; }
        value = default!;
        return false;
    }

    /// <summary>The raw bytes of a tensor.</summary>
    public byte[] ReadBytes(GgufTensor tensor)
    {
        var bytes = new byte[tensor.ByteLength];
        using var stream = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        stream.Seek(tensor.Offset, SeekOrigin.Begin);
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>A tensor's values as float32 (f32, f16, bf16, q8_0 and q4_0 are read).</summary>
    public float[] ReadFloat32(string name)
    {
        var t = Tensor(name);
        var values = new float[t.ElementCount];
        GgmlQuants.Dequantize(ReadBytes(t), t.Type, values);
        return values;
    }

    /// <summary>Whether <paramref name="path"/> starts with GGUF's magic bytes.</summary>
    public static bool IsGguf(string path)
    {
        if (!File.Exists(path)) return false;
        using var s = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return s.Length >= 4 && s.Read(magic) == 4 && magic.SequenceEqual("GGUF"u8);
    }

    public static GgufFile Open(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"GGUF file not found: {path}");
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var r = new Reader(stream, path);
        var magic = r.Bytes(4, "the magic bytes");
        if (!magic.AsSpan().SequenceEqual("GGUF"u8))
            throw new PeftSharpException($"{path}: not a GGUF file (the first four bytes are {Convert.ToHexString(magic)}, expected \"GGUF\" = 47475546).");
        uint version = r.UInt32("the version");
        if (version is not (2 or 3))
            throw new PeftSharpException($"{path}: GGUF version {version} is not supported (expected 2 or 3; version 1 files predate 64-bit counts).");
        ulong tensorCount = r.UInt64("the tensor count");
        ulong kvCount = r.UInt64("the metadata count");
        // Each metadata pair takes at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8.
        if (kvCount > (ulong)stream.Length / 13 || tensorCount > (ulong)stream.Length / 32)
            throw new PeftSharpException($"{path}: the header claims {tensorCount} tensors and {kvCount} metadata pairs, more than a {stream.Length}-byte file can hold; the file is corrupt.");
        var metadata = new List<KeyValuePair<string, GgufValue>>((int)kvCount);
        var keys = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            long at = r.Position;
            string key = r.String($"metadata key #{i}");
            if (!keys.Add(key)) throw new PeftSharpException($"{path}: metadata key '{key}' appears twice (at offset {at}).");
            long typeAt = r.Position;
            uint type = r.UInt32($"the type of metadata '{key}'");
            metadata.Add(new(key, r.Value((GgufValueType)type, key, typeAt)));
        }
        int alignment = GgufWriter.DefaultAlignment;
        var alignValue = metadata.FirstOrDefault(kv => kv.Key == "general.alignment").Value;
        if (alignValue != null)
        {
            if (alignValue.Value is not uint a || a == 0 || (a & (a - 1)) != 0)
                throw new PeftSharpException($"{path}: general.alignment must be a uint32 power of two, got {alignValue}.");
            alignment = (int)a;
        }
        var infos = new List<(string Name, long[] Dims, GgmlType Type, ulong Offset, long Bytes, long At)>((int)tensorCount);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            long at = r.Position;
            string name = r.String($"the name of tensor #{i}");
            if (!names.Add(name)) throw new PeftSharpException($"{path}: tensor '{name}' appears twice (at offset {at}).");
            uint n = r.UInt32($"the dimension count of tensor '{name}'");
            if (n is < 1 or > 4) throw new PeftSharpException($"{path}: tensor '{name}' (offset {at}) has {n} dimensions; ggml tensors have 1 to 4.");
            var dims = new long[n];
            long elements = 1;
            for (int d = 0; d < n; d++)
            {
                ulong v = r.UInt64($"dimension {d} of tensor '{name}'");
                if (v == 0 || v > long.MaxValue / 2) throw new PeftSharpException($"{path}: tensor '{name}' (offset {at}) has dimension {d} = {v}; expected a positive size.");
                dims[d] = (long)v;
                elements = elements > long.MaxValue / (long)v ? long.MaxValue : elements * (long)v;
            }
            uint type = r.UInt32($"the type of tensor '{name}'");
            var traits = GgmlTypes.Traits((GgmlType)type)
                ?? throw new PeftSharpException($"{path}: tensor '{name}' (offset {at}) has ggml type {type}, which is not a known ggml type.");
            if (dims[0] % traits.BlockSize != 0)
                throw new PeftSharpException($"{path}: tensor '{name}' is {GgmlTypes.Name((GgmlType)type)} with rows of {dims[0]} values, not a multiple of its block size {traits.BlockSize}.");
            ulong offset = r.UInt64($"the data offset of tensor '{name}'");
            long bytes = elements == long.MaxValue ? long.MaxValue : elements / traits.BlockSize * traits.BlockBytes;
            infos.Add((name, dims, (GgmlType)type, offset, bytes, at));
        }
        long dataOffset = GgufWriter.Align(r.Position, alignment);
        long dataLength = stream.Length - dataOffset;
        var tensors = new List<GgufTensor>(infos.Count);
        foreach (var t in infos)
        {
            if (t.Offset % (ulong)alignment != 0)
                throw new PeftSharpException($"{path}: tensor '{t.Name}' starts at data offset {t.Offset}, not a multiple of the alignment {alignment}.");
            if (t.Offset > (ulong)Math.Max(dataLength, 0) || t.Bytes > dataLength - (long)t.Offset)
                throw new PeftSharpException($"{path}: tensor '{t.Name}' ({t.Bytes} bytes at data offset {t.Offset}) ends past the end of the file "
                    + $"(the data section starts at byte {dataOffset} and holds {Math.Max(dataLength, 0)} bytes); the file is truncated or corrupt.");
            tensors.Add(new GgufTensor(t.Name, t.Dims, t.Type, dataOffset + (long)t.Offset, t.Bytes));
        }
        return new GgufFile(path, version, metadata, tensors, alignment, dataOffset);
    }

    private sealed class Reader(Stream stream, string path)
    {
        private readonly byte[] _scratch = new byte[8];
        public long Position => stream.Position;

        public byte[] Bytes(long count, string what)
        {
            long at = stream.Position;
            if (count < 0 || count > stream.Length - at)
                throw new PeftSharpException($"{path}: the file ends at byte {stream.Length} while reading {what} ({count} bytes at offset {at}); the file is truncated or corrupt.");
            var bytes = new byte[count];
            stream.ReadExactly(bytes);
            return bytes;
        }

        private ReadOnlySpan<byte> Fixed(int count, string what)
        {
            long at = stream.Position;
            if (count > stream.Length - at)
                throw new PeftSharpException($"{path}: the file ends at byte {stream.Length} while reading {what} at offset {at}; the file is truncated or corrupt.");
            stream.ReadExactly(_scratch, 0, count);
            return _scratch.AsSpan(0, count);
        }

        public uint UInt32(string what) => BitConverter.ToUInt32(Fixed(4, what));
        public ulong UInt64(string what) => BitConverter.ToUInt64(Fixed(8, what));

        public string String(string what)
        {
            long at = stream.Position;
            ulong length = UInt64(what);
            if (length > (ulong)(stream.Length - stream.Position))
                throw new PeftSharpException($"{path}: {what} at offset {at} claims {length} bytes, past the end of the file ({stream.Length} bytes); the file is corrupt.");
            return Encoding.UTF8.GetString(Bytes((long)length, what));
        }

        public GgufValue Value(GgufValueType type, string key, long at)
        {
            string what = $"the value of metadata '{key}'";
            if (type == GgufValueType.Array)
            {
                uint elementType = UInt32(what);
                ulong count = UInt64(what);
                if (count > (ulong)(stream.Length - stream.Position))
                    throw new PeftSharpException($"{path}: metadata '{key}' (offset {at}) claims an array of {count} values, more than the rest of the file can hold; the file is corrupt.");
                var et = (GgufValueType)elementType;
                Array array = et switch
                {
                    GgufValueType.UInt8 => new byte[count],
                    GgufValueType.Int8 => new sbyte[count],
                    GgufValueType.UInt16 => new ushort[count],
                    GgufValueType.Int16 => new short[count],
                    GgufValueType.UInt32 => new uint[count],
                    GgufValueType.Int32 => new int[count],
                    GgufValueType.Float32 => new float[count],
                    GgufValueType.Bool => new bool[count],
                    GgufValueType.String => new string[count],
                    GgufValueType.UInt64 => new ulong[count],
                    GgufValueType.Int64 => new long[count],
                    GgufValueType.Float64 => new double[count],
                    _ => throw new PeftSharpException($"{path}: metadata '{key}' (offset {at}) is an array of value type {elementType}; expected a GGUF value type 0-8 or 10-12."),
                };
                for (long i = 0; i < (long)count; i++) array.SetValue(Value(et, key, at).Value, i);
                return new GgufValue(GgufValueType.Array, array, et);
            }
            object value = type switch
            {
                GgufValueType.UInt8 => Fixed(1, what)[0],
                GgufValueType.Int8 => (sbyte)Fixed(1, what)[0],
                GgufValueType.UInt16 => BitConverter.ToUInt16(Fixed(2, what)),
                GgufValueType.Int16 => BitConverter.ToInt16(Fixed(2, what)),
                GgufValueType.UInt32 => BitConverter.ToUInt32(Fixed(4, what)),
                GgufValueType.Int32 => BitConverter.ToInt32(Fixed(4, what)),
                GgufValueType.Float32 => BitConverter.ToSingle(Fixed(4, what)),
                GgufValueType.Bool => Fixed(1, what)[0] switch
                {
                    0 => false,
                    1 => true,
                    var b => throw new PeftSharpException($"{path}: metadata '{key}' (offset {at}) is a bool of value {b}; expected 0 or 1."),
                },
                GgufValueType.String => String(what),
                GgufValueType.UInt64 => BitConverter.ToUInt64(Fixed(8, what)),
                GgufValueType.Int64 => BitConverter.ToInt64(Fixed(8, what)),
                GgufValueType.Float64 => BitConverter.ToDouble(Fixed(8, what)),
                _ => throw new PeftSharpException($"{path}: metadata '{key}' has value type {(uint)type} (at offset {at}); expected a GGUF value type 0-12."),
            };
            return new GgufValue(type, value);
        }
    }
}
