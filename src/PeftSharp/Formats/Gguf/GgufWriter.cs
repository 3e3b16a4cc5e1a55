using System.Text;
using PeftSharp.Formats.Safetensors;

namespace PeftSharp.Formats.Gguf;

/// <summary>
/// Writes a GGUF file (version 3, little-endian): the magic "GGUF", the version, the tensor and metadata
/// counts, the metadata key/value pairs, the tensor infos (name, dimensions with ne[0] the row length,
/// ggml type, offset into the data section), padding to <c>general.alignment</c> (32 by default), then each
/// tensor's bytes, each padded to the alignment. Tensors are given as callbacks that write their bytes when
/// the writer reaches them, so one tensor at a time is held in memory; the file goes through a temp file and
/// a rename (<see cref="AtomicFile"/>), so a failed export leaves nothing behind.
/// </summary>
public sealed class GgufWriter
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    public const uint Version = 3;
    public const int DefaultAlignment = 32;

    private readonly List<KeyValuePair<string, GgufValue>> _metadata = [];
    private readonly List<TensorInfo> _tensors = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    private sealed record TensorInfo(string Name, long[] Dimensions, GgmlType Type, long ByteLength, Action<Stream> Write);

    public int Alignment { get; private set; } = DefaultAlignment;
    public IReadOnlyList<KeyValuePair<string, GgufValue>> Metadata => _metadata;
    public int TensorCount => _tensors.Count;

    /// <summary>Adds a metadata pair; a key may appear once. <c>general.alignment</c> (uint32, a power of two) sets the alignment.</summary>
    public void Add(string key, GgufValue value)
    {
        if (!_keys.Add(key)) throw new ArgumentException($"GGUF metadata key '{key}' was added twice.");
        if (key == "general.alignment")
        {
            if (value.Value is not uint a || a == 0 || (a & (a - 1)) != 0) throw new ArgumentException("general.alignment must be a uint32 power of two.");
            Alignment = (int)a;
        }
        _metadata.Add(new(key, value));
    }

    public void Add(string key, string value) => Add(key, GgufValue.Of(value));
    public void Add(string key, uint value) => Add(key, GgufValue.Of(value));
    public void Add(string key, float value) => Add(key, GgufValue.Of(value));
    public void Add(string key, bool value) => Add(key, GgufValue.Of(value));

    /// <summary>
    /// Adds a tensor of ggml dimensions <paramref name="dimensions"/> (ne[0] first: a torch [out, in] weight is
    /// [in, out] here) whose bytes <paramref name="write"/> writes when the file is written (exactly its byte size).
    /// </summary>
    public void AddTensor(string name, long[] dimensions, GgmlType type, Action<Stream> write)
    {
        if (!_names.Add(name)) throw new ArgumentException($"GGUF tensor '{name}' was added twice.");
        if (dimensions.Length is < 1 or > 4) throw new ArgumentException($"GGUF tensor '{name}': ggml tensors have 1 to 4 dimensions, got {dimensions.Length}.");
        long rows = 1;
        foreach (var d in dimensions.Skip(1)) rows = checked(rows * d);
        long bytes = GgmlTypes.ByteSize(type, dimensions[0], rows);
        _tensors.Add(new TensorInfo(name, dimensions, type, bytes, write));
    }

    /// <summary>Writes the file atomically.</summary>
    public void Write(string path) => AtomicFile.Write(path, WriteTo);

    /// <summary>Writes the file to <paramref name="stream"/>.</summary>
    public void WriteTo(Stream stream)
    {
        // Not disposed: disposing a BufferedStream closes the stream it wraps, which belongs to the caller.
        var buffered = new BufferedStream(stream, 1 << 20);
        using var w = new BinaryWriter(buffered, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, value) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value.Type, value.Value, value.ElementType, key);
        }
        long offset = 0;
        foreach (var t in _tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Dimensions.Length);
            foreach (var d in t.Dimensions) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offset = Align(offset + t.ByteLength, Alignment);
        }
        w.Flush();
        long position = 0;
        Pad(buffered, ref position, HeaderLength());
        foreach (var t in _tensors)
        {
            var counted = new ExactLengthStream(buffered, t.Name, t.ByteLength);
            t.Write(counted);
            counted.Finish();
            long written = t.ByteLength;
            Pad(buffered, ref written, 0);
        }
        buffered.Flush();
    }

    private long HeaderLength()
    {
        using var counter = new CountingStream();
        using (var w = new BinaryWriter(counter, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic); w.Write(Version); w.Write((ulong)0); w.Write((ulong)0);
            foreach (var (key, value) in _metadata)
            {
                WriteString(w, key);
                w.Write((uint)value.Type);
                WriteValue(w, value.Type, value.Value, value.ElementType, key);
            }
            foreach (var t in _tensors)
            {
                WriteString(w, t.Name);
                w.Write(0u);
                foreach (var _ in t.Dimensions) w.Write(0UL);
                w.Write(0u); w.Write(0UL);
            }
        }
        return counter.Length;
    }

    /// <summary>Writes zeros after <paramref name="written"/> bytes (plus <paramref name="extra"/>) up to the alignment.</summary>
    private void Pad(Stream stream, ref long written, long extra)
    {
        long total = written + extra;
        int pad = (int)(Align(total, Alignment) - total);
        if (pad > 0) stream.Write(new byte[pad]);
        written = total + pad;
    }

    public static long Align(long value, int alignment) => (value + alignment - 1) / alignment * alignment;

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value, GgufValueType elementType, string key)
    {
        try
        {
            switch (type)
            {
                case GgufValueType.UInt8: w.Write((byte)value); break;
                case GgufValueType.Int8: w.Write((sbyte)value); break;
                case GgufValueType.UInt16: w.Write((ushort)value); break;
                case GgufValueType.Int16: w.Write((short)value); break;
                case GgufValueType.UInt32: w.Write((uint)value); break;
                case GgufValueType.Int32: w.Write((int)value); break;
                case GgufValueType.Float32: w.Write((float)value); break;
                case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
                case GgufValueType.String: WriteString(w, (string)value); break;
                case GgufValueType.UInt64: w.Write((ulong)value); break;
                case GgufValueType.Int64: w.Write((long)value); break;
                case GgufValueType.Float64: w.Write((double)value); break;
                case GgufValueType.Array:
                    if (elementType == GgufValueType.Array) throw new ArgumentException($"GGUF metadata '{key}': arrays of arrays are not supported.");
                    var array = (Array)value;
                    w.Write((uint)elementType);
                    w.Write((ulong)array.Length);
                    foreach (var item in array) WriteValue(w, elementType, item!, GgufValueType.UInt8, key);
                    break;
                default: throw new ArgumentException($"GGUF metadata '{key}': unknown value type {(uint)type}.");
            }
        }
        catch (InvalidCastException)
        {
            throw new ArgumentException($"GGUF metadata '{key}': a {value.GetType().Name} is not a {type}{(type == GgufValueType.Array ? " of " + elementType : "")}.");
        }
    }

    private sealed class CountingStream : Stream
    {
        private long _length;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override void Write(byte[] buffer, int offset, int count) => _length += count;
        public override void Write(ReadOnlySpan<byte> buffer) => _length += buffer.Length;
        public override void WriteByte(byte value) => _length++;
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
