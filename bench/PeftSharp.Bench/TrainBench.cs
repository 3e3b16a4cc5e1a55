using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using PeftSharp.Training;
using PeftSharp.Training.Optimizers;
using PeftSharp.Training.Preference;

namespace PeftSharp.Bench;

/// <summary>
/// `train --model distilgpt2|gpt2|stories15m|qwen2.5-0.5b --target c_attn|q_proj,v_proj|all-linear [-r 8] [--batch 4] [--seq 256]
/// [--quant nf4 [--compute-dtype bfloat16|float32|float16]] [--bf16] [--ab-bf16-dot | --ab-bf16] [--steps 5] [--checkpointing] [--dropout 0] [--threads N] [--parts-per-thread N] [--profile]`: LoRA training steps (forward, loss, backward, AdamW) on a model of that shape
/// with random f32 weights (the base optionally quantized to NF4 with double quantization and bf16 compute first) and random
/// token batches. After one warm-up step, times the rest; one JSON line with tokens/s, ms per step, peak RSS and the arena peak.
/// `--objective dpo|reward` runs a preference step instead of the SFT loss: --batch pairs of --seq tokens per side (prompt half,
/// completion half), chosen and rejected in one batch (the SFT step on the same tokens is --batch 2×pairs); DPO adds the
/// reference's no-grad forward (the adapter off), reward puts a score head on the last token.
/// `--model-dir DIR [--float32 | --dtype bfloat16|float16]` loads a Hugging Face folder as `peftsharp train` does instead (16-bit
/// weights stay views of the file unless --float32; --dtype rounds the frozen matrices on load as model.dtype does; with --quant the
/// linears are quantized from them, and their pages released, one at a time).
/// `--bf16` is training's bf16: true (<see cref="BaseCompute.UseBf16"/>: frozen dense and 16-bit base linears multiply bf16-rounded
/// operands). `--ab-bf16-dot` alternates steps between the AVX512-BF16 kernel and the f32 kernel over the same rounded values;
/// `--ab-bf16` (with --bf16) alternates bf16 products and f32 products (<see cref="Ops.Float32Products"/>), in one process.
/// </summary>
public static class TrainBench
{
    public static int Run(string[] args)
    {
        string name = Option(args, "--model", "distilgpt2");
        string target = Option(args, "--target", "c_attn");
        int r = int.Parse(Option(args, "-r", "8"));
        int batch = int.Parse(Option(args, "--batch", "4"));
        int seq = int.Parse(Option(args, "--seq", "256"));
        int steps = int.Parse(Option(args, "--steps", "5"));
        string? quant = args.Contains("--quant") ? Option(args, "--quant", "nf4") : null;
        bool checkpointing = args.Contains("--checkpointing");
        double dropout = double.Parse(Option(args, "--dropout", "0"), System.Globalization.CultureInfo.InvariantCulture);
        if (args.Contains("--threads")) Kernels.Parallelism.MaxThreads = int.Parse(Option(args, "--threads", "2"));
        if (args.Contains("--parts-per-thread")) Kernels.GemmBlocking.PartsPerThread = int.Parse(Option(args, "--parts-per-thread", "1"));
        string objective = Option(args, "--objective", "sft");
        if (objective is not ("sft" or "dpo" or "reward")) throw new ArgumentException($"--objective {objective}: expected sft, dpo or reward.");
        if (quant is not (null or "nf4" or "fp4")) throw new ArgumentException($"--quant {quant}: expected nf4 or fp4.");
        string computeDtype = Option(args, "--compute-dtype", "bfloat16");

        string? folder = args.Contains("--model-dir") ? Option(args, "--model-dir", "") : null;
        if (folder != null) name = Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/'));
        var config = folder == null ? ModelBench.Config(name) : ModelConfig.Load(folder);
        var bnb = new BitsAndBytesConfig
        {
            LoadIn4bit = true, Bnb4bitQuantType = quant ?? "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitComputeDtype = computeDtype,
        };
        // QLoRA: each linear is quantized as it is created (random f32 weights of one layer at a time),
        // so the peak memory is the 4-bit model's, as when loading a bf16 checkpoint layer by layer.
        var layerRng = new Rng(4);
        var options = quant == null ? null : new LoadOptions { LinearOverride = info => info.IsOutputLayer ? null : RandomQuantized(info, bnb, layerRng) };
        using var model = folder == null ? CausalLM.CreateRandom(config, new Rng(1), options)
            : QuantizedModel.Load(folder, new LoadOptions { Float32 = args.Contains("--float32"), Weights16 = Weights16(Option(args, "--dtype", "auto")) });
        if (folder != null && quant != null) QuantizedModel.QuantizeLinears(model, bnb);
        model.GradientCheckpointing = checkpointing;
        var classifier = objective == "reward"
            ? new SequenceClassifier((CausalLM)model, 1, Parameter.Create("score.weight", [1, config.HiddenSize], false)) : null;
        var targets = target == TargetModules.AllLinearKeyword ? TargetModules.AllLinear : TargetModules.FromNames(target.Split(','));
        using var peft = PeftModel.Wrap(classifier ?? (ICausalLM)model, new LoraConfig { R = r, LoraAlpha = 2 * r, LoraDropout = dropout, TargetModules = targets }, rng: new Rng(2));
        var (trainable, all) = peft.CountParameters();
        bool bf16 = args.Contains("--bf16");
        if (bf16) BaseCompute.UseBf16(peft.Model.Linears);
        using var optimizer = new AdamW(peft.TrainableParameters, learningRate: 1e-4f);

        var rng = new Rng(3);
        using var tape = new Tape(1 << 20);
        var ops = new Ops(tape);
        int half = Math.Max(1, seq / 2);
        var pairs = Enumerable.Range(0, batch).Select(i => new TokenizedPair(i,
            new TokenizedSequence(Enumerable.Range(0, seq).Select(_ => rng.NextInt(config.VocabSize)).ToArray(), objective == "reward" ? 0 : half),
            new TokenizedSequence(Enumerable.Range(0, seq).Select(_ => rng.NextInt(config.VocabSize)).ToArray(), objective == "reward" ? 0 : half), 0)).ToList();
        ITrainingObjective<PairBatch>? preference = objective switch
        {
            "dpo" => new DpoObjective(model, new PreferenceOptions(), pairs, null, batch, 0, new DisabledAdapterReference(peft)),
            "reward" => new RewardObjective(classifier!, new PreferenceOptions(), pairs, null, batch, 0),
            _ => null,
        };
        void Step()
        {
            if (preference != null)
            {
                preference.Accumulate(tape, PairBatch.Build(pairs, 0), 1.0);
                optimizer.Step();
                optimizer.ZeroGrad();
                return;
            }
            var tokens = new TokenBatch(batch, seq, Enumerable.Range(0, batch * seq).Select(_ => rng.NextInt(config.VocabSize)).ToArray());
            tape.Backward(peft.Model.Loss(ops, tokens));
            tape.Reset();
            using var part = StepProfiler.Enter(StepPart.Optimizer);
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        Step();
        if (args.Contains("--ab-bf16-dot"))
            return Alternate(Step, steps, "train_ab_bf16_dot", name, target, batch, seq, computeDtype, bf16, odd => odd ? PeftSharp.Kernels.Bf16Dot.Disable() : null);
        if (args.Contains("--ab-bf16"))
            return Alternate(Step, steps, "train_ab_bf16", name, target, batch, seq, computeDtype, bf16, odd => new Float32Products(ops, odd));
        if (args.Contains("--profile")) return Profile(Step, steps, peft.Model, batch * seq, new
        {
            model = name, layers = config.LayerCount, target, r, lora_dropout = dropout, batch, seq, checkpointing,
            quant = quant ?? (folder != null ? QuantizedCheckpoint.ReadConfig(folder)?.Bnb4bitQuantType : null) ?? "none",
        });
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < steps; i++) Step();
        double seconds = watch.Elapsed.TotalSeconds / steps;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            op = "train",
            objective,
            model = name,
            target,
            r,
            lora_dropout = dropout,
            threads = Kernels.Parallelism.MaxThreads,
            batch,
            seq,
            quant = quant ?? "none",
            compute_dtype = quant == null ? "float32" : computeDtype,
            bf16,
            bf16_dot = PeftSharp.Kernels.Bf16Dot.Enabled,
            base_dtype = folder == null ? "float32 (random)" : args.Contains("--float32") ? "float32" : args.Contains("--dtype") ? Option(args, "--dtype", "auto") : config.TorchDtype ?? "as stored",
            checkpointing,
            tok_per_s = Math.Round((preference != null ? 2 : 1) * batch * seq / seconds, 1),
            step_ms = Math.Round(seconds * 1e3, 1),
            peak_rss_mb = ModelBench.PeakRssMib(),
            arena_peak_mb = Math.Round(tape.Arena.HighWater * 4.0 / (1 << 20), 1),
            trainable,
            @params = all,
        }));
        return 0;
    }

    /// <summary>
    /// `--ab-bf16-dot` / `--ab-bf16`: steps alternate between A (even steps) and B (odd steps: <paramref name="odd"/>'s scope
    /// turns the AVX512-BF16 kernel off, or bf16 products off) in one process, so both see the same machine load; medians.
    /// </summary>
    private static int Alternate(Action step, int steps, string op, string name, string target, int batch, int seq, string computeDtype, bool bf16,
        Func<bool, IDisposable?> odd)
    {
        List<double> a = [], b = [];
        for (int i = 0; i < 2 * steps; i++)
        {
            using var scope = odd(i % 2 == 1);
            var watch = Stopwatch.StartNew();
            step();
            (i % 2 == 0 ? a : b).Add(watch.Elapsed.TotalMilliseconds);
        }
        static double Median(List<double> v) => v.Order().ElementAt(v.Count / 2);
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            op, model = name, target, batch, seq, compute_dtype = computeDtype, bf16,
            bf16_dot = PeftSharp.Kernels.Bf16Dot.Enabled, steps_each = steps,
            step_ms_a = Math.Round(Median(a), 1), step_ms_b = Math.Round(Median(b), 1),
            ratio = Math.Round(Median(a) / Median(b), 3),
        }));
        return 0;
    }

    /// <summary>Sets <see cref="Ops.Float32Products"/> for a scope.</summary>
    private sealed class Float32Products : IDisposable
    {
        private readonly Ops _ops;
        private readonly bool _previous;

        public Float32Products(Ops ops, bool on)
        {
            _ops = ops;
            _previous = ops.Float32Products;
            ops.Float32Products = on;
        }

        public void Dispose() => _ops.Float32Products = _previous;
    }

    internal static DType? Weights16(string dtype) => dtype switch
    {
        "bfloat16" => DType.BF16,
        "float16" => DType.F16,
        "auto" => null,
        var d => throw new ArgumentException($"--dtype {d}: expected auto, bfloat16 or float16."),
    };

    /// <summary>
    /// `--profile`: the steps after the warm-up under <see cref="StepProfiler"/>; one JSON line per part with its seconds per
    /// step in each phase (first forward, recomputation under checkpointing, backward) and its share of the step, then the
    /// phases' totals and the step's wall time measured outside the profiler beside the parts' sum.
    /// </summary>
    /// Then each frozen 4-bit layer's forward and input gradient at the step's rows timed alone, one call each (the same
    /// weights, right after the steps, so under the same machine load): the products' rate in the step beside their rate alone.
    private static int Profile(Action step, int steps, ICausalLM model, int rows, object run)
    {
        var watch = Stopwatch.StartNew();
        StepProfiler.Start();
        for (int i = 0; i < steps; i++) step();
        var profile = StepProfiler.Stop();
        double wall = watch.Elapsed.TotalSeconds / steps, total = profile.TotalSeconds / steps;
        static double Round(double seconds) => Math.Round(seconds, 4);
        foreach (var part in Enum.GetValues<StepPart>())
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                op = "train_profile", run, part = StepProfile.Name(part),
                forward_s = Round(profile.Seconds(part, StepPhase.Forward) / steps),
                recompute_s = Round(profile.Seconds(part, StepPhase.Recompute) / steps),
                backward_s = Round(profile.Seconds(part, StepPhase.Backward) / steps),
                seconds = Round(profile.Seconds(part) / steps), share = Math.Round(profile.Seconds(part) / profile.TotalSeconds, 4),
            }));
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            op = "train_profile_total", run, steps, threads = Kernels.Parallelism.MaxThreads, bf16_dot = PeftSharp.Kernels.Bf16Dot.Enabled,
            forward_s = Round(profile.Seconds(StepPhase.Forward) / steps), recompute_s = Round(profile.Seconds(StepPhase.Recompute) / steps),
            backward_s = Round(profile.Seconds(StepPhase.Backward) / steps), parts_s = Round(total), step_s = Round(wall),
            parts_over_step = Math.Round(total / wall, 4),
        }));
        var (aloneForward, aloneBackward, flops, lastFlops) = FourBitAlone(model, rows);
        if (flops == 0) return 0;
        // The recomputation skips each layer's last product (Tape.UnreadOutput: its values are never read).
        double recomputedFlops = flops - lastFlops;
        double inStepForward = profile.Seconds(StepPart.Linear4Bit, StepPhase.Forward) / steps;
        double inStepRecompute = profile.Seconds(StepPart.Linear4Bit, StepPhase.Recompute) / steps;
        double inStepBackward = profile.Seconds(StepPart.Linear4Bit, StepPhase.Backward) / steps;
        static double Rate(double flop, double seconds) => seconds > 0 ? Math.Round(flop / seconds / 1e9, 1) : 0;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            op = "train_profile_linear4bit", run, gflop_per_pass = Math.Round(flops / 1e9, 1), gflop_recomputed = Math.Round(recomputedFlops / 1e9, 1),
            in_step_gflops = new { forward = Rate(flops, inStepForward), recompute = Rate(recomputedFlops, inStepRecompute), backward = Rate(flops, inStepBackward) },
            alone_gflops = new { forward = Rate(flops, aloneForward), backward = Rate(flops, aloneBackward) },
            alone_s = new { forward = Round(aloneForward), backward = Round(aloneBackward) },
        }));
        return 0;
    }

    /// <summary>
    /// Seconds of one forward and one input gradient of every frozen 4-bit layer on <paramref name="rows"/> rows, the FLOPs of
    /// one pass, and those of the layers' last products (down_proj, mlp.c_proj), which a recomputation skips.
    /// </summary>
    private static unsafe (double Forward, double Backward, double Flops, double LastFlops) FourBitAlone(ICausalLM model, int rows)
    {
        var layers = model.Linears.Select(slot => slot.Base).OfType<Linear4Bit>().ToList();
        if (layers.Count == 0) return (0, 0, 0, 0);
        int widest = layers.Max(l => Math.Max(l.Info.InFeatures, l.Info.OutFeatures));
        using var a = new NativeBuffer<float>((long)rows * widest);
        using var b = new NativeBuffer<float>((long)rows * widest);
        a.Span.Fill(0.01f);
        b.Span.Fill(0.01f);
        double forward = 0, backward = 0, flops = 0, lastFlops = 0;
        foreach (var layer in layers)
        {
            long start = Stopwatch.GetTimestamp();
            FourBitGemm.LinearForward4Bit(a.Pointer, layer.Weight, null, b.Pointer, rows, layer.ComputeType);
            forward += Stopwatch.GetElapsedTime(start).TotalSeconds;
            start = Stopwatch.GetTimestamp();
            FourBitGemm.LinearBackwardInput4Bit(a.Pointer, layer.Weight, b.Pointer, rows, accumulate: false, layer.ComputeType);
            backward += Stopwatch.GetElapsedTime(start).TotalSeconds;
            double layerFlops = 2.0 * rows * layer.Info.InFeatures * layer.Info.OutFeatures;
            flops += layerFlops;
            if (layer.Info.Name.EndsWith(".mlp.down_proj", StringComparison.Ordinal) || layer.Info.Name.EndsWith(".mlp.c_proj", StringComparison.Ordinal))
                lastFlops += layerFlops;
        }
        return (forward, backward, flops, lastFlops);
    }

    private static string Option(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }

    private static unsafe Linear4Bit RandomQuantized(LinearModuleInfo info, BitsAndBytesConfig config, Rng rng)
    {
        var weight = new float[(long)info.OutFeatures * info.InFeatures];
        rng.FillNormal(weight, 0f, 0.02f);
        var bias = new float[info.OutFeatures];
        fixed (float* w = weight, b = bias)
            return Linear4Bit.Quantize(info, w, PeftSharp.Tensors.DType.F32, info.HasBias ? b : null, config);
    }
}
