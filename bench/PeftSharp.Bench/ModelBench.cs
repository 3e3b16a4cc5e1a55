using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `model [--model distilgpt2|gpt2|stories15m|qwen2.5-0.5b] [--iterations N] [--modes forward,forward_loss,train_frozen_base,greedy_decode,train_full,train_full_checkpointed,profile,decode_profile,prefill_profile] [--shapes 4x256,1x512] [--threads N]`: a model of that shape with
/// random weights. JSON lines: forward tokens/s (to the logits; forward_loss: to the evaluation loss, the logits
/// scored a vocabulary block at a time), training-step tokens/s (batch 4×256 and 1×512; a frozen
/// base whose loss backpropagates to the inputs only, and full fine-tuning, with and without gradient
/// checkpointing, with the arena peak), greedy decode tokens/s (32-token prompt, 128 new) and peak RSS; medians over the iterations after one warm-up.
/// `--model-dir DIR [--dtype auto|bfloat16|float16] [--nf4]` loads a Hugging Face folder instead (16-bit weights stay views of the
/// file; --dtype rounds other frozen matrices to 16 bits on load, as model.dtype does) and first prints a `load` line: the
/// safetensors size, the load time and the resident memory right after loading; --nf4 then quantizes every linear but
/// the tied output layer to NF4 (double quantization, f32 compute). `--bf16` is training's bf16: true for the frozen model
/// (<see cref="BaseCompute.UseBf16"/>): forward, forward_loss and train_frozen_base multiply bf16-rounded operands; decoding stays f32.
/// </summary>
public static class ModelBench
{
    public static int Run(string[] args)
    {
        string name = Option(args, "--model", "distilgpt2");
        int iterations = int.Parse(Option(args, "--iterations", "2"));
        if (args.Contains("--threads")) Kernels.Parallelism.MaxThreads = int.Parse(Option(args, "--threads", "2"));
        var config = args.Contains("--model-dir") ? ModelConfig.Load(Option(args, "--model-dir", "")) : Config(name);
        var shapes = Option(args, "--shapes", "4x256,1x512").Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(s => s.Split('x')).Select(p => (Batch: int.Parse(p[0]), SeqLen: int.Parse(p[1]))).ToArray();
        var modes = Option(args, "--modes", "").Split(',', StringSplitOptions.RemoveEmptyEntries);
        bool Wanted(string mode) => modes.Length == 0 || modes.Contains(mode);

        if (Wanted("profile") && config is Gpt2Config gpt2)
            foreach (var (b, t) in shapes)
                ModelProfile.Run(name, gpt2.HiddenSize, gpt2.HeadCount, gpt2.LayerCount, gpt2.VocabSize, b, t);
        if (modes.Length == 1 && modes[0] == "profile") return 0;
        string? folder = args.Contains("--model-dir") ? Option(args, "--model-dir", "") : null;
        if (folder != null) name = Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/'));
        using (var frozen = folder == null
            ? CausalLM.CreateRandom(config, new Rng(1), new LoadOptions { Trainable = FirstNorm })
            : Load(folder, new LoadOptions { Trainable = FirstNorm, Weights16 = TrainBench.Weights16(Option(args, "--dtype", "auto")) }))
        {
            if (args.Contains("--nf4")) QuantizeNf4(frozen);
            if (args.Contains("--bf16")) BaseCompute.UseBf16(frozen.Linears);
            foreach (var (b, t) in shapes)
            {
                if (Wanted("forward")) Report(name, "forward", b, t, iterations, frozen, train: false);
                if (Wanted("forward_loss")) Report(name, "forward_loss", b, t, iterations, frozen, train: false, loss: true);
                if (Wanted("train_frozen_base")) Report(name, "train_frozen_base", b, t, iterations, frozen, train: true);
            }
            if (Wanted("greedy_decode")) Decode(name, frozen, prompt: 32, generate: 128, repeats: iterations);
            if (modes.Contains("decode_profile")) DecodeProfile(name, frozen, repeats: Math.Max(3, iterations), rows: 1);
            if (modes.Contains("prefill_profile")) DecodeProfile(name, frozen, repeats: Math.Max(3, iterations), rows: 32);
        }
        if (!Wanted("train_full") && !Wanted("train_full_checkpointed")) return 0;
        using (var full = CausalLM.CreateRandom(config, new Rng(1), new LoadOptions { FullFineTune = true }))
            foreach (var (b, t) in shapes)
                foreach (bool checkpointing in new[] { false, true })
                {
                    string mode = checkpointing ? "train_full_checkpointed" : "train_full";
                    if (!Wanted(mode)) continue;
                    full.GradientCheckpointing = checkpointing;
                    Report(name, mode, b, t, iterations, full, train: true);
                }
        return 0;
    }

    private static CausalLM Load(string folder, LoadOptions options)
    {
        long start = Stopwatch.GetTimestamp();
        var model = CausalLM.Load(folder, options);
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        long bytes = Directory.GetFiles(folder, "*.safetensors").Sum(f => new FileInfo(f).Length);
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "model",
            model = Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/')),
            mode = "load",
            safetensors_mib = Math.Round(bytes / (1024.0 * 1024), 1),
            load_ms = Math.Round(seconds * 1e3, 1),
            rss_mib = CurrentRssMib(),
            peak_rss_mib = PeakRssMib(),
        }));
        return model;
    }

    /// <summary>Every linear but a tied output layer quantized to NF4 with double quantization (QLoRA's storage), f32 compute.</summary>
    internal static void QuantizeNf4(CausalLM model) =>
        QuantizedModel.QuantizeLinears(model, new BitsAndBytesConfig
        {
            LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitComputeDtype = "float32",
        });

    /// <summary>Resident memory now (VmRSS), MiB.</summary>
    internal static double CurrentRssMib() => StatusMib("VmRSS:") ?? Math.Round(Process.GetCurrentProcess().WorkingSet64 / (1024.0 * 1024), 1);

    /// <summary>One trainable norm weight in the first layer: every activation after it needs a gradient, no linear weight does.</summary>
    private static bool FirstNorm(string parameter) => parameter is "transformer.h.0.ln_1.weight" or "model.layers.0.input_layernorm.weight";

    internal static ModelConfig Config(string name)
    {
        string configs = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "tests", "PeftSharp.Tests", "Golden", "configs");
        return name switch
        {
            "distilgpt2" or "gpt2" => ModelConfig.Load(Path.Combine(configs, name + ".json")),
            "qwen2.5-0.5b" => ModelConfig.Load(Path.Combine(configs, "qwen2.5-0.5b-instruct.json")),
            "stories15m" => ModelConfig.Parse("""
                {"model_type": "llama", "hidden_size": 288, "intermediate_size": 768, "num_hidden_layers": 6,
                 "num_attention_heads": 6, "num_key_value_heads": 6, "vocab_size": 32000, "max_position_embeddings": 1024,
                 "rms_norm_eps": 1e-5, "tie_word_embeddings": true}
                """),
            _ => throw new ArgumentException($"--model {name}: expected distilgpt2, gpt2, stories15m or qwen2.5-0.5b."),
        };
    }

    private static void Report(string model, string mode, int batch, int seqLen, int iterations, CausalLM lm, bool train, bool loss = false)
    {
        var rng = new Rng(2);
        var tokens = TokenBatch(rng, batch, seqLen, lm.VocabSize);
        using var tape = new Tape(1 << 20) { GradEnabled = train };
        var ops = new Ops(tape);
        void Step()
        {
            if (train) tape.Backward(lm.Loss(ops, tokens));
            else if (loss) lm.Loss(ops, tokens);
            else lm.Forward(ops, tokens);
            tape.Reset();
        }
        Step();
        var times = new double[Math.Max(1, iterations)];
        for (int i = 0; i < times.Length; i++)
        {
            long start = Stopwatch.GetTimestamp();
            Step();
            times[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        double seconds = Median(times);
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "model",
            model,
            mode,
            batch,
            seq_len = seqLen,
            ms = Math.Round(seconds * 1e3, 1),
            tokens_per_s = Math.Round(batch * seqLen / seconds, 1),
            arena_peak_mib = Math.Round(tape.Arena.HighWater * 4.0 / (1 << 20), 1),
            peak_rss_mib = PeakRssMib(),
        }));
    }

    /// <summary>One untimed warm-up run (JIT, buffers), then the median of <paramref name="repeats"/> timed runs.</summary>
    private static void Decode(string model, CausalLM lm, int prompt, int generate, int repeats)
    {
        DecodeOnce(lm, prompt, 4);
        var runs = Enumerable.Range(0, Math.Max(1, repeats)).Select(_ => DecodeOnce(lm, prompt, generate)).ToArray();
        double prefill = Median(runs.Select(r => r.Prefill)), decode = Median(runs.Select(r => r.Decode));
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "model",
            model,
            mode = "greedy_decode",
            prompt_tokens = prompt,
            new_tokens = generate,
            repeats = runs.Length,
            prefill_tokens_per_s = Math.Round(prompt / prefill, 1),
            decode_tokens_per_s = Math.Round(generate / decode, 1),
            peak_rss_mib = PeakRssMib(),
        }));
    }

    /// <summary>
    /// `decode_profile`: where a decoding step's time goes. The median step of a 32 + 128 greedy run, then every linear
    /// layer's forward on one row timed alone (median of 20 calls after a warm-up, its weight bytes and GB/s per module
    /// kind); the step minus the layers is everything else (embedding, norms, attention, activations, logits copy, argmax).
    /// </summary>
    private static unsafe void DecodeProfile(string model, CausalLM lm, int repeats, int rows)
    {
        var ids = PromptIds(lm.VocabSize, 32);
        Greedy(lm, ids, 4);
        double step = rows == 1
            ? Median(Enumerable.Range(0, repeats).Select(_ => Greedy(lm, ids, 128).Decode / 128))
            : Median(Enumerable.Range(0, repeats).Select(_ => Greedy(lm, ids, 0).Prefill));
        using var tape = new Tape(1 << 20) { GradEnabled = false, Training = false };
        var ops = new Ops(tape);
        var kinds = new SortedDictionary<string, (double Seconds, double Bytes, double Flops)>(StringComparer.Ordinal);
        foreach (var slot in lm.Linears)
        {
            // A decoding step multiplies one row by each layer; a prefill multiplies `rows` rows, but only the last one by the head.
            int m = slot == lm.HeadSlot ? 1 : rows;
            var x = tape.NewTensor([m, slot.Info.InFeatures], requiresGrad: false);
            new Span<float>(x.Data, m * slot.Info.InFeatures).Fill(0.01f);
            var mark = tape.Arena.Mark();
            slot.Layer.Forward(ops, x);
            var times = new double[20];
            for (int i = 0; i < times.Length; i++)
            {
                tape.Arena.Release(mark);
                long start = Stopwatch.GetTimestamp();
                slot.Layer.Forward(ops, x);
                times[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
            }
            tape.Reset();
            string kind = string.Join(".", slot.Name.Split(".").TakeLast(2));
            double bytes = LlamaPeerBench.StoredBytes(slot.Layer, slot.Info);
            var (s0, b0, f0) = kinds.GetValueOrDefault(kind);
            kinds[kind] = (s0 + Median(times), b0 + bytes, f0 + 2.0 * m * slot.Info.InFeatures * slot.Info.OutFeatures);
        }
        double linears = kinds.Values.Sum(v => v.Seconds);
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "model", model, mode = rows == 1 ? "decode_profile" : "prefill_profile", rows, threads = Kernels.Parallelism.MaxThreads,
            step_ms = Math.Round(step * 1e3, 3), linears_ms = Math.Round(linears * 1e3, 3), other_ms = Math.Round((step - linears) * 1e3, 3),
            linears = kinds.ToDictionary(k => k.Key, k => new { ms = Math.Round(k.Value.Seconds * 1e3, 3), gbs = Math.Round(k.Value.Bytes / k.Value.Seconds / 1e9, 2), gflops = Math.Round(k.Value.Flops / k.Value.Seconds / 1e9, 1) }),
        }));
    }

    private static (double Prefill, double Decode) DecodeOnce(CausalLM lm, int prompt, int generate)
    {
        var run = Greedy(lm, PromptIds(lm.VocabSize, prompt), generate);
        return (run.Prefill, run.Decode);
    }

    /// <summary>The benchmark prompt: <paramref name="prompt"/> token ids drawn from a fixed seed.</summary>
    internal static int[] PromptIds(int vocab, int prompt)
    {
        var rng = new Rng(3);
        return Enumerable.Range(0, prompt).Select(_ => rng.NextInt(vocab)).ToArray();
    }

    /// <summary>Prefill of <paramref name="ids"/>, then <paramref name="generate"/> greedy steps (each one Append): seconds of each phase and the tokens chosen.</summary>
    /// <summary>A prompt's prefill, then greedy steps: seconds of each by <paramref name="clock"/> (the wall clock when null).</summary>
    internal static (double Prefill, double Decode, int[] Tokens) Greedy(CausalLM lm, int[] ids, int generate, Func<double>? clock = null)
    {
        clock ??= WallSeconds;
        var logits = new float[lm.VocabSize];
        var tokens = new int[generate];
        using var session = lm.StartDecoding(1, ids.Length + generate);
        double start = clock();
        session.Append(ids, [], ids.Length, logits);
        double prefill = clock() - start;
        for (int i = 0; i < generate; i++)
        {
            int next = tokens[i] = ArgMax(logits);
            session.Append([next], [], 1, logits);
        }
        return (prefill, clock() - start - prefill, tokens);
    }

    internal static double WallSeconds() => Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;

    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int v = 1; v < values.Length; v++) if (values[v] > values[best]) best = v;
        return best;
    }

    internal static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static TokenBatch TokenBatch(Rng rng, int batch, int seqLen, int vocab) =>
        new(batch, seqLen, Enumerable.Range(0, batch * seqLen).Select(_ => rng.NextInt(vocab)).ToArray());

    /// <summary>Peak resident memory of the process (VmHWM), MiB.</summary>
    internal static double PeakRssMib() => StatusMib("VmHWM:") ?? Math.Round(Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024), 1);

    /// <summary>A kB field of /proc/self/status in MiB, or null off Linux.</summary>
    private static double? StatusMib(string field)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return null;
        foreach (var line in File.ReadLines(status))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return Math.Round(long.Parse(line[field.Length..].Trim().Split(' ')[0]) / 1024.0, 1);
        return null;
    }

    internal static string Option(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }
}
