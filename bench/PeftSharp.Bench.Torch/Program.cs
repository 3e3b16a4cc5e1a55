using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using PeftSharp.Formats.Safetensors;
using Rng = PeftSharp.Tensors.Rng;
using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Bench.Torch;

/// <summary>
/// `PeftSharp.Bench.Torch --modes forward,train,prefill,decode,check,mkl [--model-dir DIR] [--threads N] [--mkl-avx512]
/// [--shapes 4x256] [--iterations 3] [--batch 4 --seq 256 --steps 5 -r 8 --dropout 0] [--prompt 32 --generate 128]
/// [--attention sdpa|manual]`: the distilgpt2-shaped GPT-2 in LibTorch (TorchSharp), as a TorchSharp user writes it
/// (<see cref="Gpt2LMHead"/>), with the weights of DIR's model.safetensors (f32, e.g. `peftsharp init-model --preset
/// distilgpt2`) or random ones. JSON lines, medians over the timed runs after one warm-up:
/// forward (B×T to the logits, no grad), train (a LoRA step on c_attn: forward, cross-entropy over every next-token
/// position, backward into the LoRA matrices only, AdamW over them), prefill (the --prompt tokens through an empty KV cache,
/// logits of the last one), decode (prefill, then --generate greedy tokens one at a time through the cache: both rates),
/// check (with DIR: PeftSharp loads the same checkpoint in this process; logits, loss and greedy tokens compared),
/// mkl (a 1024³ sgemm on --threads: GFLOP/s by wall and by process CPU time, to tell MKL's paths apart).
/// --mkl-avx512 sets MKL_ENABLE_INSTRUCTIONS=AVX512 in this process before LibTorch loads: MKL otherwise gives AMD
/// processors its AVX2 kernels; that is the path an Intel AVX-512 server gets.
/// </summary>
public static class Program
{
    private static readonly string[] Modes = ["forward", "train", "prefill", "decode", "check", "mkl"];

    public static int Main(string[] args)
    {
        try
        {
            return Run(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"torch bench: {e.Message}");
            return 1;
        }
    }

    private static int Run(string[] args)
    {
        var modes = Option(args, "--modes", "forward,train,decode").Split(',', StringSplitOptions.RemoveEmptyEntries);
        foreach (var m in modes)
            if (!Modes.Contains(m)) throw new ArgumentException($"--modes {m}: expected some of {string.Join(", ", Modes)}.");
        string? folder = args.Contains("--model-dir") ? Option(args, "--model-dir", "") : null;
        if (modes.Contains("check") && folder == null) throw new ArgumentException("--modes check needs --model-dir DIR (the weights both engines load).");
        string attention = Option(args, "--attention", "sdpa");
        if (attention is not ("sdpa" or "manual")) throw new ArgumentException($"--attention {attention}: expected sdpa or manual.");
        int threads = int.Parse(Option(args, "--threads", Environment.ProcessorCount.ToString()));
        int iterations = int.Parse(Option(args, "--iterations", "3"));

        // Before LibTorch (and MKL inside it) loads: MKL reads its environment once, at its first call.
        string mklPath = Mkl.Configure(args.Contains("--mkl-avx512"));
        LoadLibTorch();
        torch.set_num_threads(threads);
        var context = new Context(folder == null ? "distilgpt2 (random)" : Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/')),
            threads, mklPath, attention);
        bool sdpa = attention == "sdpa";

        foreach (var mode in modes)
        {
            switch (mode)
            {
                case "mkl":
                    Mkl.Sgemm(context);
                    break;
                case "forward":
                    using (var model = Build(folder, sdpa, null))
                        foreach (var (b, t) in Shapes(Option(args, "--shapes", "4x256")))
                            Forward(context, model, b, t, iterations);
                    break;
                case "train":
                    var lora = new LoraSpec(int.Parse(Option(args, "-r", "8")), 2.0 * int.Parse(Option(args, "-r", "8")),
                        double.Parse(Option(args, "--dropout", "0"), System.Globalization.CultureInfo.InvariantCulture));
                    using (var model = Build(folder, sdpa, lora))
                        Train(context, model, lora, int.Parse(Option(args, "--batch", "4")), int.Parse(Option(args, "--seq", "256")),
                            int.Parse(Option(args, "--steps", "5")));
                    break;
                case "prefill" or "decode":
                    using (var model = Build(folder, sdpa, null))
                        Decode(context, model, int.Parse(Option(args, "--prompt", "32")), mode == "decode" ? int.Parse(Option(args, "--generate", "128")) : 0, iterations);
                    break;
                case "check":
                    using (var model = Build(folder!, sdpa, null))
                        Agreement.Check(context, model, folder!, sdpa);
                    break;
            }
        }
        return 0;
    }

    /// <summary>What every JSON line repeats: the weights, the threads, the MKL path and the attention kernel.</summary>
    public sealed record Context(string Model, int Threads, string MklInstructions, string Attention)
    {
        public Dictionary<string, object?> Line(string mode) => new()
        {
            ["bench"] = "torch", ["engine"] = "libtorch", ["torch"] = torch.__version__, ["model"] = Model, ["mode"] = mode,
            ["threads"] = Threads, ["mkl_enable_instructions"] = MklInstructions,  ["attention"] = Attention,
        };
    }

    private static void LoadLibTorch()
    {
        try
        {
            using var probe = torch.zeros(1);
        }
        catch (TypeInitializationException e) when (e.InnerException is NotSupportedException)
        {
            throw new ArgumentException("LibTorch did not load. If libLibTorchSharp.so asks for a newer libstdc++ than this system has "
                + "(`ldd -v` says GLIBCXX_3.4.32 not found), run bench/PeftSharp.Bench.Torch/weaken-glibcxx.py on the copy in "
                + "bin/ (the build does it on Linux; see bench/PeftSharp.Bench.Torch/README.md).");
        }
    }

    /// <summary>The model with DIR's weights (model.safetensors, any float dtype, widened to f32) or random ones (N(0, 0.02)).</summary>
    public static Gpt2LMHead Build(string? folder, bool sdpa, LoraSpec? lora)
    {
        var model = new Gpt2LMHead(Gpt2Shape.DistilGpt2, sdpa, lora);
        using var _ = torch.no_grad();
        if (folder == null)
        {
            foreach (var (name, p) in model.named_parameters())
            {
                if (name.Contains(".lora_")) continue;
                if (name.EndsWith(".bias")) p.zero_();
                else if (name.Contains(".ln_")) p.fill_(1);
                else p.normal_(0, 0.02);
            }
            return model;
        }
        using var checkpoint = SafetensorsCheckpoint.Open(folder);
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.Contains(".lora_")) continue;
            string stored = Gpt2LMHead.CheckpointName(name);
            if (!checkpoint.TryGetTensor(stored, out var tensor))
                throw new ArgumentException($"{folder}: no tensor '{stored}' in the checkpoint (a GPT-2 of distilgpt2's shape was expected).");
            if (!tensor.Shape.SequenceEqual(p.shape))
                throw new ArgumentException($"{folder}: '{stored}' is [{string.Join(", ", tensor.Shape)}], expected [{string.Join(", ", p.shape)}].");
            unsafe
            {
                // Widened straight into the parameter's storage (fresh, contiguous f32), then the file's pages dropped.
                fixed (byte* storage = p.bytes) tensor.ReadFloat32((float*)storage);
            }
            tensor.ReleasePages();
        }
        return model;
    }

    private static void Forward(Context context, Gpt2LMHead model, int batch, int seqLen, int iterations)
    {
        model.eval();
        var generator = new Generator(2);
        using var ids = torch.randint(0, Gpt2Shape.DistilGpt2.Vocab, [batch, seqLen], generator: generator);
        void Step()
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            model.forward(ids);
        }
        double seconds = Timed(Step, iterations);
        var line = context.Line("forward");
        line["batch"] = batch;
        line["seq_len"] = seqLen;
        line["ms"] = Math.Round(seconds * 1e3, 1);
        line["tokens_per_s"] = Math.Round(batch * seqLen / seconds, 1);
        line["peak_rss_mib"] = PeakRssMib();
        Print(line);
    }

    private static void Train(Context context, Gpt2LMHead model, LoraSpec lora, int batch, int seqLen, int steps)
    {
        model.train();
        var trainable = model.Trainable;
        using var optimizer = torch.optim.AdamW(trainable, lr: 1e-4);
        var generator = new Generator(3);
        double loss = 0;
        void Step()
        {
            using var scope = torch.NewDisposeScope();
            var ids = torch.randint(0, Gpt2Shape.DistilGpt2.Vocab, [batch, seqLen], generator: generator);
            var value = CausalLoss(model.forward(ids), ids);
            value.backward();
            optimizer.step();
            optimizer.zero_grad();
            loss = value.item<float>();
        }
        double seconds = Timed(Step, steps);
        var line = context.Line("train");
        line["target"] = "c_attn";
        line["r"] = lora.R;
        line["lora_alpha"] = lora.Alpha;
        line["lora_dropout"] = lora.Dropout;
        line["batch"] = batch;
        line["seq"] = seqLen;
        line["step_ms"] = Math.Round(seconds * 1e3, 1);
        line["tokens_per_s"] = Math.Round(batch * seqLen / seconds, 1);
        line["loss"] = Math.Round(loss, 4);
        line["trainable"] = trainable.Sum(p => p.numel());
        line["base_requires_grad"] = model.parameters().Count(p => p.requires_grad) - trainable.Count;
        line["peak_rss_mib"] = PeakRssMib();
        Print(line);
    }

    /// <summary>transformers' causal-LM loss: logits at t score token t + 1, the mean over every such position.</summary>
    public static Tensor CausalLoss(Tensor logits, Tensor ids)
    {
        long vocab = logits.shape[2];
        return nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, vocab), ids[.., 1..].reshape(-1));
    }

    private static void Decode(Context context, Gpt2LMHead model, int prompt, int generate, int iterations)
    {
        model.eval();
        var ids = PromptIds(Gpt2Shape.DistilGpt2.Vocab, prompt);
        Greedy(model, ids, Math.Min(generate, 4));
        var runs = Enumerable.Range(0, Math.Max(1, iterations)).Select(_ => Greedy(model, ids, generate)).ToArray();
        var line = context.Line(generate == 0 ? "prefill" : "decode");
        line["prompt_tokens"] = prompt;
        line["new_tokens"] = generate;
        line["repeats"] = runs.Length;
        line["prefill_tokens_per_s"] = Math.Round(prompt / Median(runs.Select(r => r.Prefill)), 1);
        if (generate > 0) line["decode_tokens_per_s"] = Math.Round(generate / Median(runs.Select(r => r.Decode)), 1);
        line["peak_rss_mib"] = PeakRssMib();
        Print(line);
    }

    /// <summary>The benchmark prompt of `model --modes greedy_decode`: token ids drawn from PeftSharp's Rng(3).</summary>
    public static int[] PromptIds(int vocab, int prompt)
    {
        var rng = new Rng(3);
        return Enumerable.Range(0, prompt).Select(_ => rng.NextInt(vocab)).ToArray();
    }

    /// <summary>Prefill of ids through an empty KV cache, then greedy steps: seconds of each phase and the tokens chosen.</summary>
    public static (double Prefill, double Decode, int[] Tokens) Greedy(Gpt2LMHead model, int[] ids, int generate)
    {
        using var _ = torch.no_grad();
        using var cache = new KvCache(Gpt2Shape.DistilGpt2.Layers);
        var tokens = new int[generate];
        var watch = Stopwatch.StartNew();
        long next;
        using (var scope = torch.NewDisposeScope())
            next = model.LastLogits(torch.tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]), cache).argmax(-1).item<long>();
        double prefill = watch.Elapsed.TotalSeconds;
        for (int i = 0; i < generate; i++)
        {
            tokens[i] = (int)next;
            using var scope = torch.NewDisposeScope();
            next = model.LastLogits(torch.tensor(new[] { next }, [1, 1]), cache).argmax(-1).item<long>();
        }
        return (prefill, watch.Elapsed.TotalSeconds - prefill, tokens);
    }

    /// <summary>One untimed run, then the median seconds of <paramref name="runs"/> timed ones.</summary>
    private static double Timed(Action step, int runs)
    {
        step();
        var times = new double[Math.Max(1, runs)];
        for (int i = 0; i < times.Length; i++)
        {
            long start = Stopwatch.GetTimestamp();
            step();
            times[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        return Median(times);
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static IEnumerable<(int Batch, int SeqLen)> Shapes(string list) =>
        list.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => s.Split('x')).Select(p => p.Length == 2
            ? (int.Parse(p[0]), int.Parse(p[1])) : throw new ArgumentException($"--shapes {list}: expected BATCHxSEQ[,BATCHxSEQ...]."));

    /// <summary>Peak resident memory of the process (VmHWM), MiB.</summary>
    public static double PeakRssMib()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return Math.Round(long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0]) / 1024.0, 1);
        return double.NaN;
    }

    public static void Print(Dictionary<string, object?> line) => Console.WriteLine(JsonSerializer.Serialize(line));

    public static string Option(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }
}

/// <summary>MKL inside libtorch_cpu.so (oneMKL 2024.2, linked in): its instruction-set switch and an sgemm to time its path.</summary>
public static class Mkl
{
    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int SetEnv(string name, string value, int overwrite);

    [DllImport("libc", EntryPoint = "getenv")]
    private static extern IntPtr GetEnv(string name);

    /// <summary>Sets MKL_ENABLE_INSTRUCTIONS=AVX512 in the C environment (what MKL reads) when asked; returns the value in force.</summary>
    public static string Configure(bool avx512)
    {
        if (avx512 && SetEnv("MKL_ENABLE_INSTRUCTIONS", "AVX512", 1) != 0) throw new InvalidOperationException("setenv failed");
        var value = GetEnv("MKL_ENABLE_INSTRUCTIONS");
        return value == IntPtr.Zero ? "default" : Marshal.PtrToStringUTF8(value)!;
    }

    /// <summary>A 1024³ sgemm (torch.mm) on the configured threads: GFLOP/s by wall time and by process CPU time, medians of 10.</summary>
    public static void Sgemm(Program.Context context)
    {
        const int n = 1024;
        using var a = torch.randn(n, n);
        using var b = torch.randn(n, n);
        void Multiply()
        {
            using var c = a.mm(b);
        }
        for (int i = 0; i < 3; i++) Multiply();
        var wall = new double[10];
        var cpu = new double[10];
        var process = Process.GetCurrentProcess();
        for (int i = 0; i < wall.Length; i++)
        {
            process.Refresh();
            var cpu0 = process.TotalProcessorTime;
            long start = Stopwatch.GetTimestamp();
            Multiply();
            wall[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
            process.Refresh();
            cpu[i] = (process.TotalProcessorTime - cpu0).TotalSeconds;
        }
        double flops = 2.0 * n * n * n;
        var line = context.Line("mkl");
        line["sgemm"] = "1024^3";
        line["gflops_wall"] = Math.Round(flops / Program.Median(wall) / 1e9, 1);
        line["gflops_cpu_time"] = Math.Round(flops / Program.Median(cpu) / 1e9 * context.Threads, 1);
        line["peak_rss_mib"] = Program.PeakRssMib();
        Program.Print(line);
    }
}
