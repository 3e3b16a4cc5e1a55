using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace PeftSharp.Data;

/// <summary>
/// Tokenized training examples of a run kept on disk, as `datasets`' map cache keeps them, so a second run or a resume
/// starts without reading and tokenizing the training data again. One folder per key, <c>tokenized-KEY/</c>, where KEY
/// hashes everything that changes the result: each data file (path, size, modification time), the split, the tokenizer's
/// <see cref="Formats.Tokenizers.Tokenizer.Fingerprint"/>, the chat template's source and variables, and every data option
/// that shapes an example (max_length, the loss masks, eos_token, the format...). Packing is not in the key: rows are
/// packed from the cached examples. The folder holds <c>ids.bin</c> (int32 token ids end to end), <c>mask.bin</c> (a byte a
/// token, 1 = in the loss), <c>offsets.bin</c> (int64, each example's first token, then the total) and <c>meta.bin</c>
/// (format, notices, skipped records, counts, sizes). It is written into a temp folder while the data is tokenized
/// (<see cref="Writer"/>) and renamed into place when complete; it is read back memory-mapped (<see cref="TryOpen"/>), so a
/// second run's start costs a few file opens, not a read of every token. A folder whose files do not match its meta
/// (torn, truncated) is deleted and rebuilt; other keys' folders are removed when a new one is written.
/// </summary>
public static class TokenizationCache
{
    private const string Magic = "PeftSharp tokenized v2\n";

    /// <summary>What the loader reports about the cached split besides its examples.</summary>
    public sealed record Info(DatasetFormat Format, IReadOnlyList<string> Notices, IReadOnlyList<MalformedRecord> Skipped, int TrainExamples, int Truncated);

    public sealed record Entry(Info Info, TokenStore Train);

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

    /// <summary>The cache folder of a key.</summary>
    public static string PathFor(string directory, string key) => Path.Combine(directory, $"tokenized-{key}");

    /// <summary>The cached entry, memory-mapped, or null when there is none or its files do not match its meta (the folder is then deleted).</summary>
    public static Entry? TryOpen(string path)
    {
        if (!Directory.Exists(path)) return null;
        Entry? entry = null;
        try { entry = Open(path); }
        catch (Exception e) when (e is EndOfStreamException or IOException or FormatException or UnauthorizedAccessException) { }
        if (entry == null) DeleteQuietly(path);
        return entry;
    }

    private static unsafe Entry? Open(string path)
    {
        string metaPath = Path.Combine(path, "meta.bin");
        if (!File.Exists(metaPath)) return null;
        Info info;
        int count;
        long tokens;
        TokenStoreSummary summary;
        using (var r = new BinaryReader(File.OpenRead(metaPath), Encoding.UTF8))
        {
            if (r.ReadString() != Magic) return null;
            var format = (DatasetFormat)r.ReadInt32();
            var notices = new string[r.ReadInt32()];
            for (int i = 0; i < notices.Length; i++) notices[i] = r.ReadString();
            var skipped = new MalformedRecord[r.ReadInt32()];
            for (int i = 0; i < skipped.Length; i++) skipped[i] = new MalformedRecord(r.ReadString(), r.ReadInt32(), r.ReadString());
            info = new Info(format, notices, skipped, r.ReadInt32(), r.ReadInt32());
            count = r.ReadInt32();
            tokens = r.ReadInt64();
            summary = new TokenStoreSummary(r.ReadInt32(), r.ReadInt32(), r.ReadInt64());
            if (r.ReadString() != Magic) return null;
        }
        var files = new[] { "ids.bin", "mask.bin", "offsets.bin" }.Select(f => Path.Combine(path, f)).ToArray();
        long[] expected = [4 * tokens, tokens, 8 * ((long)count + 1)];
        for (int i = 0; i < 3; i++)
            if (!File.Exists(files[i]) || new FileInfo(files[i]).Length != expected[i]) return null;
        var ids = new MappedFile(files[0]);
        var mask = new MappedFile(files[1]);
        var offsets = new MappedFile(files[2]);
        // Offsets must rise from 0 to the token count, so no example reads outside the mapped ids.
        var o = (long*)offsets.Pointer;
        bool ok = o[0] == 0 && o[count] == tokens;
        for (int i = 0; ok && i < count; i++) ok = o[i] <= o[i + 1];
        if (!ok)
        {
            ids.Dispose();
            mask.Dispose();
            offsets.Dispose();
            return null;
        }
        return new Entry(info, new MappedTokenStore(ids, mask, offsets, count, summary));
    }

    private static void DeleteQuietly(string path)
    {
        try { if (Directory.Exists(path)) Directory.Delete(path, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    /// <summary>
    /// Writes a cache folder while examples are appended: into <c>tokenized-KEY.tmp-PID-GUID/</c>, renamed to the key's folder by
    /// <see cref="Commit"/>; disposing an uncommitted writer deletes the temp folder.
    /// </summary>
    public sealed class Writer : TokenStoreWriter
    {
        private readonly string _path, _temp;
        private readonly FileStream _ids, _mask, _offsets;
        private bool _committed;

        public Writer(string path)
        {
            _path = Path.GetFullPath(path);
            string directory = Path.GetDirectoryName(_path)!;
            Directory.CreateDirectory(directory);
            // Folders of other keys and temp folders of runs that died are stale (one run folder caches one training split);
            // a temp folder of a process still running is left to it.
            foreach (var old in Directory.EnumerateFileSystemEntries(directory, "tokenized-*"))
            {
                if (WriterAlive(old)) continue;
                if (File.Exists(old)) File.Delete(old);
                else DeleteQuietly(old);
            }
            _temp = $"{_path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
            Directory.CreateDirectory(_temp);
            _ids = Create("ids.bin");
            _mask = Create("mask.bin");
            _offsets = Create("offsets.bin");
            _offsets.Write(BitConverter.GetBytes(0L));
        }

        /// <summary>Whether <paramref name="path"/> is the temp folder (<c>.tmp-PID-GUID</c>) of another process that is running.</summary>
        private static bool WriterAlive(string path)
        {
            var m = System.Text.RegularExpressions.Regex.Match(Path.GetFileName(path), @"\.tmp-(\d+)-[0-9a-f]+$");
            if (!m.Success || !int.TryParse(m.Groups[1].Value, out int pid) || pid == Environment.ProcessId) return false;
            try
            {
                using var process = System.Diagnostics.Process.GetProcessById(pid);
                return !process.HasExited;
            }
            catch (ArgumentException) { return false; }
            catch (InvalidOperationException) { return false; }
        }

        private FileStream Create(string name) => new(Path.Combine(_temp, name), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);

        protected override void Write(ReadOnlySpan<int> ids, ReadOnlySpan<byte> mask, long end)
        {
            _ids.Write(MemoryMarshal.AsBytes(ids));
            _mask.Write(mask);
            Span<long> e = [end];
            _offsets.Write(MemoryMarshal.AsBytes(e));
        }

        /// <summary>Flushes the files to disk, writes the meta, renames the folder into place and opens it mapped.</summary>
        public Entry Commit(Info info)
        {
            foreach (var s in new[] { _ids, _mask, _offsets })
            {
                s.Flush(flushToDisk: true);
                s.Dispose();
            }
            using (var stream = new FileStream(Path.Combine(_temp, "meta.bin"), FileMode.CreateNew, FileAccess.Write))
            using (var w = new BinaryWriter(stream, Encoding.UTF8))
            {
                w.Write(Magic);
                w.Write((int)info.Format);
                w.Write(info.Notices.Count);
                foreach (var n in info.Notices) w.Write(n);
                w.Write(info.Skipped.Count);
                foreach (var s in info.Skipped) { w.Write(s.File); w.Write(s.Line); w.Write(s.Problem); }
                w.Write(info.TrainExamples);
                w.Write(info.Truncated);
                w.Write(Count);
                w.Write(Tokens);
                w.Write(Summary.MaxTokenId);
                w.Write(Summary.LongestExample);
                w.Write(Summary.LossTokens);
                w.Write(Magic);
                w.Flush();
                stream.Flush(flushToDisk: true);
            }
            DeleteQuietly(_path);
            Directory.Move(_temp, _path);
            _committed = true;
            return Open(_path) ?? throw new IOException($"{_path}: the tokenization cache just written does not read back.");
        }

        public override void Dispose()
        {
            if (_committed) return;
            foreach (var s in new[] { _ids, _mask, _offsets }) s.Dispose();
            DeleteQuietly(_temp);
        }
    }
}
