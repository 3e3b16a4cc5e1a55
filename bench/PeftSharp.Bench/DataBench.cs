using System.Diagnostics;
using System.Globalization;
using System.Text;
using Parquet;
using Parquet.Serialization;
using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Training;

namespace PeftSharp.Bench;

/// <summary>
/// `data [--rows N] [--tokenizer DIR] [--dir DIR]`: writes a smoltalk-shaped Parquet dataset (N conversations of about
/// 1 KB of text, shards of 100,000 rows, a `messages` list of {content, role} structs and a `source` column), then reads,
/// converts and tokenizes it as `train` does (Qwen's tokenizer and chat template, assistant_only_loss off) with the
/// tokenization cache (streamed a chunk at a time into the cache's files, then memory-mapped), and prints one JSON line:
/// rows/s, MB/s of message text, peak RSS, the time a second run takes to be ready from the cache, and the load average
/// before and after (the machine may be shared). The second run is timed unpacked and with BFD packing (rows packed from the
/// cached examples' lengths). --keep-cache keeps an earlier run's cache (the first run then reads it too); --trace prints
/// the memory every 100,000 rows.
/// </summary>
public static class DataBench
{
    public sealed class Message
    {
        public string content { get; set; } = "";
        public string role { get; set; } = "";
    }

    public sealed class Row
    {
        public List<Message> messages { get; set; } = [];
        public string source { get; set; } = "";
    }

    public static int Run(string[] args)
    {
        int rows = 1_000_000;
        string? tokenizerDir = null, dir = null;
        bool trace = false, keepCache = false;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--rows" && i + 1 < args.Length) rows = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i] == "--tokenizer" && i + 1 < args.Length) tokenizerDir = args[++i];
            else if (args[i] == "--dir" && i + 1 < args.Length) dir = args[++i];
            else if (args[i] == "--trace") trace = true;
            else if (args[i] == "--keep-cache") keepCache = true;
            else
            {
                Console.Error.WriteLine("usage: data [--rows N] [--tokenizer DIR] [--dir DIR] [--trace] [--keep-cache]");
                return 1;
            }
        }
        tokenizerDir ??= Path.Combine(TokenizerBench.AssetsRoot(), "tokenizers", "qwen");
        dir ??= Path.Combine(Path.GetTempPath(), $"peftsharp-databench-{rows}");
        string data = Path.Combine(dir, "data", "all");
        long textBytes = Generate(data, rows);
        string cache = Path.Combine(dir, "cache");
        if (Directory.Exists(cache) && !keepCache) Directory.Delete(cache, true);
        File.WriteAllText(Path.Combine(dir, "README.md"), "---\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n    path: data/all/train-*\n---\n");

        var tokenizer = Tokenizer.FromFolder(tokenizerDir);
        var template = ChatTemplate.FromTokenizerConfig(tokenizerDir);
        var args1 = new DataArguments { DatasetName = dir, DatasetConfig = "all", MaxLength = 2048 };
        // The peak RSS is the load's: generating the rows above is not counted (Linux resets the high-water mark on "5" to clear_refs).
        GC.Collect();
        GC.WaitForPendingFinalizers();
        if (File.Exists("/proc/self/clear_refs")) File.WriteAllText("/proc/self/clear_refs", "5");
        string loadBefore = LoadAverage();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        var first = SftData.Load(args1, tokenizer, template, seed: 0, cacheDirectory: cache, progress: trace ? new Trace() : null);
        double firstSeconds = watch.Elapsed.TotalSeconds;
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        long peak = Process.GetCurrentProcess().PeakWorkingSet64;
        // The producer's share: reading and converting the records alone (one thread), without tokenizing.
        cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sources = SftData.Resolve(args1);
        int converted = SftData.Convert(SftData.ReadRecords(sources.TrainFiles, "train", args1, []), args1, []).Examples.Count;
        double readCpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        if (converted != rows) throw new InvalidOperationException($"read {converted} rows, expected {rows}");
        long tokens = first.TrainStats!.Tokens;
        first = null;
        GC.Collect();

        watch.Restart();
        var second = SftData.Load(args1, tokenizer, template, seed: 0, cacheDirectory: cache);
        double secondSeconds = watch.Elapsed.TotalSeconds;
        if (second.TrainStats!.Tokens != tokens) throw new InvalidOperationException("the cached run differs from the first");
        // Packing is applied to the cached examples: BFD over a million lengths from the offsets.
        watch.Restart();
        var packed = SftData.Load(new DataArguments { DatasetName = dir, DatasetConfig = "all", MaxLength = 2048, Packing = true }, tokenizer, template, seed: 0,
            cacheDirectory: cache);
        double packedSeconds = watch.Elapsed.TotalSeconds;
        if (packed.TrainStats!.Tokens != tokens) throw new InvalidOperationException("the packed run differs from the first");

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{{\"bench\":\"data\",\"rows\":{rows},\"text_mb\":{textBytes / 1e6:F1},\"tokens\":{tokens},\"cores\":{Environment.ProcessorCount}," +
            $"\"first_run_s\":{firstSeconds:F2},\"first_run_cpu_s\":{cpuSeconds:F2},\"read_convert_cpu_s\":{readCpuSeconds:F2},\"rows_per_s\":{rows / firstSeconds:F0},\"text_mb_per_s\":{textBytes / 1e6 / firstSeconds:F2}," +
            $"\"peak_rss_mb\":{peak / 1048576.0:F0},\"second_run_from_cache_s\":{secondSeconds:F2},\"second_run_packed_s\":{packedSeconds:F2},\"packed_rows\":{packed.Train.Count},\"load_before\":\"{loadBefore}\",\"load_after\":\"{LoadAverage()}\"}}"));
        return 0;
    }

    /// <summary>--trace: every 100,000 rows, the progress line, the working set and the GC heap on stderr (is memory bounded?).</summary>
    private sealed class Trace : IProgress<TokenizationProgress>
    {
        private long _next;

        public void Report(TokenizationProgress p)
        {
            if (p.Rows < _next) return;
            _next = p.Rows + 100_000;
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{p.Describe()}  rss {Environment.WorkingSet / 1048576.0:F0} MB  gc heap {GC.GetGCMemoryInfo().HeapSizeBytes / 1048576.0:F0} MB  load {LoadAverage()}"));
        }
    }

    /// <summary>The 1, 5 and 15-minute load averages (Linux), or "".</summary>
    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "";

    /// <summary>Writes the shards once (kept for later runs); returns the bytes of message text.</summary>
    private static long Generate(string folder, int rows)
    {
        const int perShard = 100_000;
        int shards = (rows + perShard - 1) / perShard;
        Directory.CreateDirectory(folder);
        long bytes = 0;
        var words = "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three".Split(' ');
        for (int s = 0; s < shards; s++)
        {
            int start = s * perShard, count = Math.Min(perShard, rows - start);
            var batch = new List<Row>(count);
            var rng = new Random(start);
            for (int i = 0; i < count; i++)
            {
                string user = Sentence(rng, words, 300), answer = Sentence(rng, words, 700);
                bytes += Encoding.UTF8.GetByteCount(user) + Encoding.UTF8.GetByteCount(answer);
                batch.Add(new Row { messages = [new() { role = "user", content = user }, new() { role = "assistant", content = answer }], source = "bench" });
            }
            string path = Path.Combine(folder, $"train-{s:D5}-of-{shards:D5}.parquet");
            if (File.Exists(path)) continue;
            using var stream = File.Create(path + ".tmp");
            ParquetSerializer.SerializeAsync(batch, stream, new ParquetOptions { RowGroupSize = 20_000, CompressionMethod = CompressionMethod.Snappy }).GetAwaiter().GetResult();
            stream.Close();
            File.Move(path + ".tmp", path);
        }
        return bytes;
    }

    private static string Sentence(Random rng, string[] words, int length)
    {
        var sb = new StringBuilder(length + 16);
        while (sb.Length < length) sb.Append(words[rng.Next(words.Length)]).Append(sb.Length % 90 < 8 ? ". " : " ");
        return sb.ToString();
    }
}
