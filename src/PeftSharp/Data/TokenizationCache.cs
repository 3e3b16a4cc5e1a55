using System.Security.Cryptography;
using System.Text;
using PeftSharp.Formats;

namespace PeftSharp.Data;

/// <summary>
/// Tokenized examples of a run kept on disk, as `datasets`' map cache keeps them, so a second run or a resume starts
/// without reading and tokenizing the training data again. One file per key, <c>tokenized-KEY.bin</c>, where KEY hashes
/// everything that changes the result: each data file (path, size, modification time), the splits, the tokenizer's
/// <see cref="Formats.Tokenizers.Tokenizer.Fingerprint"/>, the chat template's source and variables, and every data
/// option that shapes an example. Written through a temp file and a rename; a file that does not read back whole is
/// ignored (and rewritten).
/// </summary>
public static class TokenizationCache
{
    private const string Magic = "PeftSharp tokenized v1\n";

    public sealed record Entry(DatasetFormat Format, IReadOnlyList<string> Notices, IReadOnlyList<MalformedRecord> Skipped,
        int TrainExamples, int Truncated, IReadOnlyList<TokenizedExample> Train);

    public static string Key(IEnumerable<string> parts)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var p in parts) sha.AppendData(Encoding.UTF8.GetBytes(p + "\u0001"));
        return Convert.ToHexString(sha.GetHashAndReset())[..32].ToLowerInvariant();
    }

    public static string FileIdentity(string path)
    {
        var info = new FileInfo(path);
        return $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}";
    }

    public static string PathFor(string directory, string key) => Path.Combine(directory, $"tokenized-{key}.bin");

    public static void Save(string path, Entry entry)
    {
        AtomicFile.Write(path, stream =>
        {
            using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
            w.Write(Magic);
            w.Write((int)entry.Format);
            w.Write(entry.Notices.Count);
            foreach (var n in entry.Notices) w.Write(n);
            w.Write(entry.Skipped.Count);
            foreach (var s in entry.Skipped) { w.Write(s.File); w.Write(s.Line); w.Write(s.Problem); }
            w.Write(entry.TrainExamples);
            w.Write(entry.Truncated);
            w.Write(entry.Train.Count);
            foreach (var e in entry.Train)
            {
                w.Write(e.Length);
                foreach (int id in e.InputIds) w.Write(id);
                var mask = new byte[e.Length];
                for (int t = 0; t < e.Length; t++) mask[t] = e.InLoss[t] ? (byte)1 : (byte)0;
                w.Write(mask);
            }
            w.Write(Magic);
        });
    }

    /// <summary>The cached entry, or null when there is none or it does not read back whole.</summary>
    public static Entry? TryLoad(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            using var r = new BinaryReader(stream, Encoding.UTF8);
            if (r.ReadString() != Magic) return null;
            var format = (DatasetFormat)r.ReadInt32();
            var notices = new string[r.ReadInt32()];
            for (int i = 0; i < notices.Length; i++) notices[i] = r.ReadString();
            var skipped = new MalformedRecord[r.ReadInt32()];
            for (int i = 0; i < skipped.Length; i++) skipped[i] = new MalformedRecord(r.ReadString(), r.ReadInt32(), r.ReadString());
            int examples = r.ReadInt32(), truncated = r.ReadInt32();
            var train = new TokenizedExample[r.ReadInt32()];
            for (int i = 0; i < train.Length; i++)
            {
                int n = r.ReadInt32();
                var idBytes = r.ReadBytes(4 * n);
                if (idBytes.Length != 4 * n) return null;
                var ids = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(idBytes).ToArray();
                var mask = r.ReadBytes(n);
                if (mask.Length != n) return null;
                var inLoss = new bool[n];
                for (int t = 0; t < n; t++) inLoss[t] = mask[t] != 0;
                train[i] = new TokenizedExample(ids, inLoss);
            }
            return r.ReadString() == Magic ? new Entry(format, notices, skipped, examples, truncated, train) : null;
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or FormatException)
        {
            return null;
        }
    }
}
