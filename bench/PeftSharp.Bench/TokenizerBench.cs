using System.Diagnostics;
using System.Globalization;
using System.Text;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Bench;

/// <summary>
/// `tokenizer [--tokenizer DIR]`: encodes a deterministic ~1 MB English + C# text with each tokenizer
/// of ../shared/assets/tokenizers (or the one given) and prints one JSON line per tokenizer.
/// Timed: the best of 3 encodes after one warm-up encode (so the word cache is warm).
/// </summary>
public static class TokenizerBench
{
    private static readonly string[] Names = ["gpt2", "qwen", "llama3", "mistral-7b", "llama2"];

    public static int Run(string[] args)
    {
        var folders = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--tokenizer" && i + 1 < args.Length) folders.Add(args[++i]);
            else
            {
                Console.Error.WriteLine("usage: tokenizer [--tokenizer DIR]");
                return 1;
            }
        }
        if (folders.Count == 0)
        {
            string root = Path.Combine(AssetsRoot(), "tokenizers");
            folders.AddRange(Names.Select(n => Path.Combine(root, n)).Where(Directory.Exists));
            if (folders.Count == 0)
            {
                Console.Error.WriteLine($"no tokenizers found under {root} (set PEFTSHARP_ASSETS or pass --tokenizer DIR)");
                return 1;
            }
        }
        string text = MakeText(1 << 20);
        double megabytes = Encoding.UTF8.GetByteCount(text) / 1e6;
        foreach (var folder in folders)
        {
            if (!Directory.Exists(folder))
            {
                Console.Error.WriteLine($"tokenizer folder not found: {folder}");
                return 1;
            }
            var loadWatch = Stopwatch.StartNew();
            var tokenizer = Tokenizer.FromFolder(folder);
            double loadSeconds = loadWatch.Elapsed.TotalSeconds;
            int tokens = tokenizer.Encode(text, false).Length;
            double best = double.MaxValue;
            for (int run = 0; run < 3; run++)
            {
                var watch = Stopwatch.StartNew();
                tokenizer.Encode(text, false);
                best = Math.Min(best, watch.Elapsed.TotalSeconds);
            }
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{{\"op\":\"tokenize\",\"tokenizer\":\"{Path.GetFileName(Path.TrimEndingDirectorySeparator(folder))}\",\"mb\":{megabytes:F3},\"tokens\":{tokens},\"seconds\":{best:F4},\"mb_per_s\":{megabytes / best:F2},\"tokens_per_s\":{tokens / best:F0},\"load_s\":{loadSeconds:F3}}}"));
        }
        return 0;
    }

    internal static string AssetsRoot()
    {
        var env = Environment.GetEnvironmentVariable("PEFTSHARP_ASSETS");
        if (!string.IsNullOrEmpty(env)) return env;
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "assets");
            if (Directory.Exists(candidate)) return candidate;
            candidate = Path.Combine(dir.FullName, "..", "shared", "assets");
            if (Directory.Exists(candidate)) return Path.GetFullPath(candidate);
        }
        return "/work/shared/assets";
    }

    private const string Prose =
        "The committee met on a grey Tuesday morning to review the quarterly results. Revenue had grown by {0} percent, " +
        "although costs rose faster than anyone expected; the new warehouse in the north still wasn't running at full capacity. " +
        "\"We'll need another {1} weeks,\" said the operations manager, who'd spent the summer negotiating with suppliers. " +
        "Meanwhile, the research team published a short paper on low-rank adaptation, showing that a model with {2} million " +
        "parameters could be fine-tuned on a single machine in under an hour.\n\n";

    private const string Code =
        "public static int Sum{0}(ReadOnlySpan<int> values)\n{{\n    int total = 0;\n    for (int i = 0; i < values.Length; i++)\n" +
        "        total += values[i] * {1};\n    return total; // {2} items\n}}\n\n";

    /// <summary>English prose and C# alternating, numbers varied per block, about <paramref name="bytes"/> UTF-8 bytes.</summary>
    private static string MakeText(int bytes)
    {
        var sb = new StringBuilder(bytes + 1024);
        for (int i = 0; sb.Length < bytes; i++)
        {
            sb.AppendFormat(CultureInfo.InvariantCulture, Prose, i % 97, i % 13 + 2, i * 7 % 1000);
            sb.AppendFormat(CultureInfo.InvariantCulture, Code, i, i % 31 + 1, i * 3);
        }
        return sb.ToString();
    }
}
