using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.AI.Judging;

/// <summary>
/// The judge's answers on disk, so a rerun pays nothing for a question already asked: a JSONL file of
/// {"key", "judge", "raw"} lines, the key a SHA-256 of the judge's identity, the template and the question's parts
/// (prompt and answers in the order shown). Each answer is appended as one line and flushed; a line cut short by a crash
/// (the last one) is ignored when the file is read back, so the cache is never wrong, only missing that answer.
/// </summary>
public sealed class JudgeCache : IDisposable
{
    private readonly Dictionary<string, string> _answers = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private readonly StreamWriter? _writer;

    /// <summary>A cache in <paramref name="path"/> (created when absent), or only in memory when null.</summary>
    public JudgeCache(string? path)
    {
        if (path == null) return;
        if (File.Exists(path))
        {
            int line = 0;
            foreach (var text in File.ReadLines(path))
            {
                line++;
                if (text.Length == 0) continue;
                try
                {
                    if (JsonNode.Parse(text) is JsonObject o && o["key"]?.GetValue<string>() is { } key && o["raw"]?.GetValue<string>() is { } raw)
                        _answers[key] = raw;
                }
                catch (Exception e) when (e is JsonException or InvalidOperationException) { Torn++; }
            }
        }
        else if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir) Directory.CreateDirectory(dir);
        _writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));
    }

    /// <summary>Answers held.</summary>
    public int Count { get { lock (_gate) return _answers.Count; } }

    /// <summary>Lines that did not parse when the file was read (a write cut short), ignored.</summary>
    public int Torn { get; }

    /// <summary>The key of a question: SHA-256 over its length-prefixed parts.</summary>
    public static string Key(IEnumerable<string> parts)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> length = stackalloc byte[8];
        foreach (var part in parts)
        {
            var bytes = Encoding.UTF8.GetBytes(part);
            BitConverter.TryWriteBytes(length, (long)bytes.Length);
            hash.AppendData(length);
            hash.AppendData(bytes);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    public bool TryGet(string key, out string raw)
    {
        lock (_gate) return _answers.TryGetValue(key, out raw!);
    }

    public void Add(string key, string judge, string raw)
    {
        lock (_gate)
        {
            _answers[key] = raw;
            if (_writer == null) return;
            _writer.Write(new JsonObject { ["key"] = key, ["judge"] = judge, ["raw"] = raw }.ToJsonString());
            _writer.Write('\n');
            _writer.Flush();
        }
    }

    public void Dispose()
    {
        lock (_gate) _writer?.Dispose();
    }
}
