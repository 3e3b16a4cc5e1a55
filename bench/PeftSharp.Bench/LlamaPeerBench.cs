using System.Text.Json;
using LLama;
using LLama.Common;
using LLama.Native;
using PeftSharp.Export;
using PeftSharp.Formats.Gguf;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `llama --model-dir DIR [--pairs f32:f32,f16:bf16,q8_0:nf4] [--rounds 5] [--threads 2] [--prompt 32] [--generate 128]
/// [--gguf-dir /tmp] [--stream-mib 256] [--cpu-time]`: PeftSharp's greedy decode against llama.cpp's (LLamaSharp 0.30's CPU build)
/// on the same checkpoint, side by side in one process. Each pair names a GGUF type, written by our own exporter from
/// DIR (kept in --gguf-dir and reused), and the PeftSharp load it is compared with: f32 (the checkpoint as is), bf16 or
/// f16 (model.dtype: the frozen matrices rounded to 16 bits on load), nf4 (bf16 load, then every linear but the tied
/// output layer quantized to NF4 with double quantization, bitsandbytes' QLoRA storage, f32 compute). Per round, llama.cpp and then PeftSharp
/// each prefill the same --prompt token ids and take --generate greedy steps on --threads threads (one untimed run of
/// each first). First, STREAM's triad and a pure read are measured on the same threads (<see cref="StreamBench"/>),
/// so decode's bandwidth share comes from the same minutes. JSON lines: per pair and engine the median prefill and
/// decode tok/s, the bytes of weight matrices a decode step streams (every linear's out × in at its storage size, the
/// output layer included), GB/s = that × tok/s, and its share of the STREAM figures; then the per-round ratios'
/// median (PeftSharp / llama.cpp) and how many of the greedy tokens the two engines agree on. With --cpu-time (one
/// thread only: both engines then compute on the calling thread) prefill and decode are timed by that thread's CPU
/// clock, so time spent descheduled on a shared machine is not counted (cache and memory contention still are).
/// </summary>
public static class LlamaPeerBench
{
    public static int Run(string[] args)
    {
        string folder = ModelBench.Option(args, "--model-dir", "");
        if (folder.Length == 0) throw new ArgumentException("llama: --model-dir DIR (an f32 checkpoint, e.g. init-model --preset distilgpt2) is required.");
        var pairs = ModelBench.Option(args, "--pairs", "f32:f32,f16:bf16,q8_0:nf4").Split(',').Select(p => p.Split(':')).ToArray();
        int rounds = int.Parse(ModelBench.Option(args, "--rounds", "5"));
        int threads = int.Parse(ModelBench.Option(args, "--threads", "2"));
        int promptTokens = int.Parse(ModelBench.Option(args, "--prompt", "32"));
        int generate = int.Parse(ModelBench.Option(args, "--generate", "128"));
        bool cpuTime = args.Contains("--cpu-time");
        if (cpuTime && threads != 1)
            throw new ArgumentException($"llama --cpu-time: only with --threads 1 (got {threads}); the calling thread's CPU clock does not count other threads' work.");
        Func<double> clock = cpuTime ? GemmBench.ThreadCpuSeconds : ModelBench.WallSeconds;
        string ggufDir = ModelBench.Option(args, "--gguf-dir", Path.GetTempPath());
        long streamMib = long.Parse(ModelBench.Option(args, "--stream-mib", "256"));
        Parallelism.MaxThreads = threads;
        NativeLibraryConfig.All.WithLogCallback((level, message) => { });

        var stream = StreamBench.Measure(streamMib, threads, iterations: 5);
        double triad = stream.Single(r => r.Kernel == "triad").BestGbs, read = stream.Single(r => r.Kernel == "read").BestGbs;
        Console.WriteLine(JsonSerializer.Serialize(new { bench = "llama", mode = "stream", threads, triad_gbs = Math.Round(triad, 2), read_gbs = Math.Round(read, 2), load_avg = LoadAverage() }));

        foreach (var pair in pairs)
        {
            if (pair.Length != 2) throw new ArgumentException($"--pairs: '{string.Join(':', pair)}' is not GGUFTYPE:PEFTSHARP (e.g. f16:bf16).");
            var ggufType = GgufExporter.ParseType(pair[0]);
            string gguf = Export(folder, ggufType, ggufDir);
            using var ours = LoadOurs(folder, pair[1]);
            var ids = ModelBench.PromptIds(ours.VocabSize, promptTokens);
            using var peer = new LlamaRunner(gguf, threads, promptTokens + generate);
            double ourBytes = ours.Linears.Sum(s => StoredBytes(s.Layer, s.Info));
            double peerBytes = ours.Linears.Sum(s => (double)s.Info.OutFeatures * s.Info.InFeatures) * BytesPerElement(ggufType);

            peer.Greedy(ids, 4, clock);
            ModelBench.Greedy(ours, ids, 4, clock);
            var peerRuns = new List<(double Prefill, double Decode, int[] Tokens)>();
            var ourRuns = new List<(double Prefill, double Decode, int[] Tokens)>();
            for (int round = 0; round < rounds; round++)
            {
                peerRuns.Add(peer.Greedy(ids, generate, clock));
                ourRuns.Add(ModelBench.Greedy(ours, ids, generate, clock));
            }
            void Line(string engine, string type, List<(double Prefill, double Decode, int[] Tokens)> runs, double bytes)
            {
                double prefill = promptTokens / ModelBench.Median(runs.Select(r => r.Prefill));
                double decode = generate / ModelBench.Median(runs.Select(r => r.Decode));
                double gbs = bytes * decode / 1e9;
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    bench = "llama", engine, weights = type, threads, rounds, clock = cpuTime ? "thread_cpu" : "wall", prompt_tokens = promptTokens, new_tokens = generate,
                    prefill_tokens_per_s = Math.Round(prefill, 1), decode_tokens_per_s = Math.Round(decode, 1),
                    weight_mb_per_token = Math.Round(bytes / 1e6, 1), decode_gbs = Math.Round(gbs, 2),
                    share_of_stream_read = Math.Round(gbs / read, 3), share_of_stream_triad = Math.Round(gbs / triad, 3),
                }));
            }
            Line("llama.cpp", pair[0], peerRuns, peerBytes);
            Line("peftsharp", pair[1], ourRuns, ourBytes);
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                bench = "llama", mode = "ratio", llama_weights = pair[0], peftsharp_weights = pair[1],
                decode_ratio = Math.Round(ModelBench.Median(Enumerable.Range(0, rounds).Select(i => peerRuns[i].Decode / ourRuns[i].Decode)), 3),
                prefill_ratio = Math.Round(ModelBench.Median(Enumerable.Range(0, rounds).Select(i => peerRuns[i].Prefill / ourRuns[i].Prefill)), 3),
                same_leading_tokens = peerRuns[0].Tokens.Zip(ourRuns[0].Tokens).TakeWhile(t => t.First == t.Second).Count(),
                load_avg = LoadAverage(),
            }));
        }
        return 0;
    }

    /// <summary>DIR exported to GGUF by our exporter as <paramref name="type"/>, written once and reused (keyed by the checkpoint's size and time).</summary>
    private static string Export(string folder, GgmlType type, string directory)
    {
        var weights = new FileInfo(Path.Combine(folder, "model.safetensors"));
        string path = Path.Combine(directory, $"peftsharp-bench-{Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/'))}-{weights.Length}-{weights.LastWriteTimeUtc.Ticks}-{type.ToString().ToLowerInvariant()}.gguf");
        if (File.Exists(path)) return path;
        using var model = CausalLM.Load(folder, new LoadOptions { Float32 = true });
        GgufExporter.ExportModel(model, path, new GgufExportOptions { Type = type });
        return path;
    }

    private static CausalLM LoadOurs(string folder, string variant)
    {
        DType? weights16 = variant switch
        {
            "f32" => null,
            "bf16" or "nf4" => DType.BF16,
            "f16" => DType.F16,
            _ => throw new ArgumentException($"--pairs: PeftSharp weights '{variant}': expected f32, bf16, f16 or nf4."),
        };
        var model = CausalLM.Load(folder, new LoadOptions { Weights16 = weights16 });
        if (variant == "nf4") ModelBench.QuantizeNf4(model);
        return model;
    }

    internal static double StoredBytes(ILinearLayer layer, LinearModuleInfo info) => layer switch
    {
        HalfLinear => 2.0 * info.OutFeatures * info.InFeatures,
        Linear4Bit q => q.Weight.StorageBytes,
        _ => 4.0 * info.OutFeatures * info.InFeatures,
    };

    private static double BytesPerElement(GgmlType type) => type switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        GgmlType.Q8_0 => 34.0 / 32,
        GgmlType.Q4_0 => 18.0 / 32,
        _ => throw new ArgumentException($"llama: no byte count for {type}."),
    };

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "";

    /// <summary>llama.cpp through LLamaSharp: one context, CPU only, its default KV cache and attention.</summary>
    private sealed class LlamaRunner : IDisposable
    {
        private readonly LLamaWeights _weights;
        private readonly LLamaContext _context;

        public LlamaRunner(string gguf, int threads, int contextSize)
        {
            var p = new ModelParams(gguf)
            {
                ContextSize = (uint)contextSize,
                BatchSize = (uint)contextSize,
                UBatchSize = (uint)contextSize,
                GpuLayerCount = 0,
                Threads = threads,
                BatchThreads = threads,
            };
            _weights = LLamaWeights.LoadFromFile(p);
            _context = _weights.CreateContext(p);
        }

        public (double Prefill, double Decode, int[] Tokens) Greedy(int[] ids, int generate, Func<double> clock)
        {
            var handle = _context.NativeHandle;
            handle.MemoryClear(true);
            var batch = new LLamaBatch();
            var tokens = new int[generate];
            double start = clock();
            for (int i = 0; i < ids.Length; i++) batch.Add(ids[i], i, LLamaSeqId.Zero, i == ids.Length - 1);
            Check(handle.Decode(batch));
            var logits = handle.GetLogitsIth(batch.TokenCount - 1);
            double prefill = clock() - start;
            for (int step = 0; step < generate; step++)
            {
                tokens[step] = ModelBench.ArgMax(logits);
                batch.Clear();
                batch.Add(tokens[step], ids.Length + step, LLamaSeqId.Zero, true);
                Check(handle.Decode(batch));
                logits = handle.GetLogitsIth(0);
            }
            return (prefill, clock() - start - prefill, tokens);
        }

        private static void Check(DecodeResult result)
        {
            if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {result}");
        }

        public void Dispose()
        {
            _context.Dispose();
            _weights.Dispose();
        }
    }
}
