using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Reporting;

/// <summary>
/// TensorBoard event files (report_to: tensorboard), written as TensorBoard reads them: TFRecord framing
/// (length, masked CRC-32C of the length, the record, masked CRC-32C of the record) around <c>Event</c> protocol
/// buffers, the first holding file_version "brain.Event:2", then one scalar summary per logged number with
/// transformers' TensorBoardCallback tags: "eval/…" for eval_ entries, "train/…" for the rest, at the entry's step.
/// </summary>
public sealed class TensorBoardWriter : IDisposable
{
    private readonly FileStream _stream;

    public TensorBoardWriter(string directory)
    {
        Directory.CreateDirectory(directory);
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Path = System.IO.Path.Combine(directory, $"events.out.tfevents.{now}.{Environment.MachineName}.{Environment.ProcessId}.0");
        _stream = new FileStream(Path, FileMode.Create, FileAccess.Write, FileShare.Read);
        WriteEvent(Event(WallTime(), 0, fileVersion: "brain.Event:2", summary: null));
    }

    public string Path { get; }

    /// <summary>Every number of a log entry but "step" and "epoch" (which is logged as train/epoch, as transformers does).</summary>
    public void Write(JsonObject entry)
    {
        long step = (long)(Config.KeySpec.AsNumber(entry["step"]) ?? 0);
        var summary = new MemoryStream();
        var f = new byte[4];
        foreach (var (key, node) in entry)
        {
            if (key == "step" || node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number) continue;
            string tag = key.StartsWith("eval_", StringComparison.Ordinal) ? "eval/" + key[5..] : "train/" + key;
            var value = new MemoryStream();
            WriteBytesField(value, 1, Encoding.UTF8.GetBytes(tag));
            WriteTag(value, 2, 5);
            BinaryPrimitives.WriteSingleLittleEndian(f, (float)(Config.KeySpec.AsNumber(v) ?? double.NaN));
            value.Write(f);
            WriteBytesField(summary, 1, value.ToArray());
        }
        if (summary.Length == 0) return;
        WriteEvent(Event(WallTime(), step, fileVersion: null, summary: summary.ToArray()));
    }

    private static double WallTime() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;

    private static byte[] Event(double wallTime, long step, string? fileVersion, byte[]? summary)
    {
        var e = new MemoryStream();
        WriteTag(e, 1, 1);
        Span<byte> d = stackalloc byte[8];
        BinaryPrimitives.WriteDoubleLittleEndian(d, wallTime);
        e.Write(d);
        WriteTag(e, 2, 0);
        WriteVarint(e, (ulong)step);
        if (fileVersion != null) WriteBytesField(e, 3, Encoding.UTF8.GetBytes(fileVersion));
        if (summary != null) WriteBytesField(e, 5, summary);
        return e.ToArray();
    }

    private void WriteEvent(byte[] record)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)record.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], MaskedCrc(header[..8]));
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, MaskedCrc(record));
        _stream.Write(header);
        _stream.Write(record);
        _stream.Write(footer);
        _stream.Flush();
    }

    /// <summary>TFRecord's masked CRC-32C: ((crc &gt;&gt; 15) | (crc &lt;&lt; 17)) + 0xa282ead8.</summary>
    public static uint MaskedCrc(ReadOnlySpan<byte> data)
    {
        uint crc = Crc32C(data);
        return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    }

    /// <summary>CRC-32C (Castagnoli), as TFRecord uses it.</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }

    private static void WriteTag(Stream s, int field, int wireType) => WriteVarint(s, (ulong)((field << 3) | wireType));

    private static void WriteBytesField(Stream s, int field, byte[] bytes)
    {
        WriteTag(s, field, 2);
        WriteVarint(s, (ulong)bytes.Length);
        s.Write(bytes);
    }

    private static void WriteVarint(Stream s, ulong v)
    {
        while (v >= 0x80)
        {
            s.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        s.WriteByte((byte)v);
    }

    public void Dispose() => _stream.Dispose();
}
