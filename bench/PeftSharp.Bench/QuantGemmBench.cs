using System.Globalization;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// The QLoRA measurements behind `quant --gemm` (4-bit dequant-GEMM GFLOP/s against the dense f32 GEMM on training
/// shapes), `quant --bits` (bits per parameter of the quantized linears of TinyLlama-1.1B and Qwen2.5-0.5B shaped
/// models, per-matrix accounting of real quantized tensors) and `quant --error` (quantize → dequantize error on
/// N(0, 1) and on the stories260K weights when the shared assets are present). One JSON line per case.
/// </summary>
public static unsafe class QuantGemmBench
{
    private const string Stories = "/work/shared/assets/models/stories260K-hf";

    public static int RunGemm(string[] args)
    {
        int rounds = 5, tokens = 512;
        var threadCounts = new List<int> { 1, 2 };
        var shapes = new[] { (2304, 768), (768, 768), (768, 3072) };
        bool cpuTime = false, forwardOnly = false, profileParts = false;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--cpu-time") cpuTime = true;
            else if (args[i] == "--forward") forwardOnly = true;
            else if (args[i] == "--profile-parts") profileParts = true;
            else if (args[i] == "--nc" && i + 1 < args.Length) GemmBlocking.NC = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i] == "--kc" && i + 1 < args.Length) GemmBlocking.KC = GemmBlocking.PairKC = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (i + 1 == args.Length) throw new ArgumentException($"quant --gemm: '{args[i]}' needs a value (or is unknown; expected --rounds N, --tokens N, --threads LIST, --shapes OUTxIN,..., --cpu-time, --forward, --profile-parts).");
            else if (args[i] == "--rounds") rounds = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
            else if (args[i] == "--tokens") tokens = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
            else if (args[i] == "--threads") threadCounts = args[i + 1].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList();
            else if (args[i] == "--shapes")
                shapes = args[i + 1].Split(',').Select(s => s.Split('x')).Select(p => (int.Parse(p[0], CultureInfo.InvariantCulture), int.Parse(p[1], CultureInfo.InvariantCulture))).ToArray();
            else throw new ArgumentException($"quant --gemm: unknown option '{args[i]}' (expected --rounds N, --tokens N, --threads LIST, --shapes OUTxIN,..., --cpu-time, --forward, --profile-parts).");
            if (args[i] is "--rounds" or "--tokens" or "--threads" or "--shapes") i++;
        }
        int saved = Parallelism.MaxThreads;
        try
        {
            foreach (int threads in threadCounts)
            {
                Parallelism.MaxThreads = threads;
                foreach (var (outF, inF) in shapes)
                {
                    using var w = Random((long)outF * inF, 1);
                    using var x = Random((long)tokens * inF, 2);
                    using var dy = Random((long)tokens * outF, 3);
                    using var y = new NativeBuffer<float>((long)tokens * outF);
                    using var dx = new NativeBuffer<float>((long)tokens * inF);
                    var variants = new List<(string Name, Quantized4BitTensor Q, DType Compute, bool NoDot)>();
                    foreach (bool dq in new[] { false, true })
                    {
                        var q = Quantized4BitTensor.Quantize(w.Span, [outF, inF], QuantType.Nf4, 64, dq);
                        variants.Add(($"nf4{(dq ? "_dq" : "")}_f32", q, DType.F32, false));
                        variants.Add(($"nf4{(dq ? "_dq" : "")}_bf16", q, DType.BF16, false));
                        // The same bf16 product on the f32 kernel (Bf16Dot off): what the AVX512-BF16 kernel replaces.
                        if (Bf16Dot.Enabled) variants.Add(($"nf4{(dq ? "_dq" : "")}_bf16_f32_kernel", q, DType.BF16, true));
                    }
                    double flops = 2.0 * tokens * outF * inF;
                    foreach (bool backward in forwardOnly ? new[] { false } : new[] { false, true })
                    {
                        Action dense = backward
                            ? () => Gemm.LinearBackwardInput(dy.Pointer, w.Pointer, dx.Pointer, tokens, outF, inF, accumulate: false)
                            : () => Gemm.LinearForward(x.Pointer, w.Pointer, null, y.Pointer, tokens, outF, inF);
                        var denseTimes = new List<double>();
                        var times = variants.Select(_ => new List<double>()).ToArray();
                        for (int r = 0; r < rounds; r++)
                        {
                            denseTimes.Add(GemmBench.Time(dense, 0.1, cpuTime));
                            for (int v = 0; v < variants.Count; v++)
                            {
                                var (_, q, compute, noDot) = variants[v];
                                using var off = noDot ? Bf16Dot.Disable() : null;
                                times[v].Add(GemmBench.Time(backward
                                    ? () => FourBitGemm.LinearBackwardInput4Bit(dy.Pointer, q, dx.Pointer, tokens, accumulate: false, compute)
                                    : () => FourBitGemm.LinearForward4Bit(x.Pointer, q, null, y.Pointer, tokens, compute), 0.1, cpuTime));
                            }
                        }
                        double denseGflops = flops / Median(denseTimes) / 1e9;
                        string form = backward ? "linear_bwd_input" : "linear_fwd";
                        for (int v = 0; v < variants.Count; v++)
                        {
                            double g = flops / Median(times[v]) / 1e9;
                            Console.WriteLine($"{{\"bench\":\"quant_gemm\",\"form\":\"{form}\",\"m\":{tokens},\"out\":{outF},\"in\":{inF},\"threads\":{threads}," +
                                $"\"weight\":\"{variants[v].Name}\",\"simd\":\"{Simd.Path}\",\"gflops\":{g:F1},\"dense_f32_gflops\":{denseGflops:F1},\"ratio\":{g / denseGflops:F3}}}");
                        }
                        if (profileParts)
                            foreach (var (name, q, compute, noDot) in variants.Where(v => !v.NoDot))
                            {
                                // Where the blocked product's time goes per thread (packing W's dequantized strips, X's, the kernel).
                                var c = new GemmBench.Case($"{form}_{name}", tokens, backward ? inF : outF, backward ? outF : inF, false, !backward);
                                GemmBench.ProfileParts(c, threads, backward
                                    ? () => FourBitGemm.LinearBackwardInput4Bit(dy.Pointer, q, dx.Pointer, tokens, accumulate: false, compute)
                                    : () => FourBitGemm.LinearForward4Bit(x.Pointer, q, null, y.Pointer, tokens, compute), 0.1);
                            }
                    }
                    foreach (var q in variants.Select(v => v.Q).Distinct()) q.Dispose();
                }
            }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
        return 0;
    }

    /// <summary>
    /// Bits per parameter of every quantized linear (all but the output layer) of TinyLlama-1.1B and Qwen2.5-0.5B
    /// shapes: each distinct matrix shape is quantized once from N(0, 1) values and its storage counted per
    /// occurrence. "storage" is packed codes + absmax (as <see cref="Quantized4BitTensor.StorageBytes"/>); "checkpoint"
    /// adds what bitsandbytes saves per weight besides (quant_map, nested_quant_map, nested absmax, quant_state JSON).
    /// </summary>
    public static int RunBits(string configDir)
    {
        foreach (string name in new[] { "tinyllama-1.1b-chat-v1.0", "qwen2.5-0.5b-instruct" })
        {
            var skeleton = ModelSkeleton.FromConfig(ModelConfig.Load(Path.Combine(configDir, name + ".json")));
            var shapes = skeleton.Linears.Where(l => !l.IsOutputLayer).GroupBy(l => (l.OutFeatures, l.InFeatures)).ToList();
            foreach (bool dq in new[] { false, true })
            {
                long parameters = 0, storage = 0, checkpoint = 0;
                foreach (var group in shapes)
                {
                    var (outF, inF) = group.Key;
                    using var w = Random((long)outF * inF, 7);
                    using var q = Quantized4BitTensor.Quantize(w.Span, [outF, inF], QuantType.Nf4, 64, dq);
                    long bytesOnDisk = q.ToNamedTensors("w").Sum(t => (long)t.Data.Length);
                    int count = group.Count();
                    parameters += count * q.ElementCount;
                    storage += count * q.StorageBytes;
                    checkpoint += count * bytesOnDisk;
                }
                Console.WriteLine($"{{\"bench\":\"quant_bits\",\"model\":\"{name}\",\"quant\":\"nf4\",\"double_quant\":{(dq ? "true" : "false")}," +
                    $"\"quantized_parameters\":{parameters},\"storage_bits_per_parameter\":{storage * 8.0 / parameters:F4},\"checkpoint_bits_per_parameter\":{checkpoint * 8.0 / parameters:F4}}}");
            }
        }
        return 0;
    }

    /// <summary>Relative RMS error ‖W − dequant(quant(W))‖ / ‖W‖ per format on N(0, 1) and on the stories260K linear weights.</summary>
    public static int RunError()
    {
        using var gaussian = Random(1 << 22, 11);
        foreach (var type in new[] { QuantType.Nf4, QuantType.Fp4 })
            foreach (bool dq in new[] { false, true })
            {
                var (rel, abs) = Error(gaussian.Pointer, gaussian.Length, type, dq);
                Console.WriteLine($"{{\"bench\":\"quant_error\",\"data\":\"normal(0,1) 4M\",\"quant\":\"{type.BnbName()}\",\"double_quant\":{(dq ? "true" : "false")},\"relative_rms_error\":{rel:F5},\"mean_abs_error\":{abs:F5}}}");
            }
        if (!Directory.Exists(Stories))
        {
            Console.WriteLine($"{{\"bench\":\"quant_error\",\"data\":\"stories260K\",\"skipped\":\"{Stories} not found\"}}");
            return 0;
        }
        var skeleton = ModelSkeleton.FromConfig(ModelConfig.Load(Stories));
        using var checkpoint = SafetensorsCheckpoint.Open(Stories);
        foreach (var type in new[] { QuantType.Nf4, QuantType.Fp4 })
            foreach (bool dq in new[] { false, true })
            {
                double errSq = 0, normSq = 0, absSum = 0;
                long count = 0;
                foreach (var info in skeleton.Linears.Where(l => !l.IsOutputLayer))
                {
                    var values = checkpoint[info.Name + ".weight"].ToFloat32();
                    using var q = Quantized4BitTensor.Quantize(values, [info.OutFeatures, info.InFeatures], type, 64, dq);
                    var restored = new float[values.Length];
                    q.Dequantize(restored);
                    for (int i = 0; i < values.Length; i++)
                    {
                        double d = values[i] - restored[i];
                        errSq += d * d;
                        normSq += (double)values[i] * values[i];
                        absSum += Math.Abs(d);
                    }
                    count += values.Length;
                }
                Console.WriteLine($"{{\"bench\":\"quant_error\",\"data\":\"stories260K linears\",\"quant\":\"{type.BnbName()}\",\"double_quant\":{(dq ? "true" : "false")},\"parameters\":{count}," +
                    $"\"relative_rms_error\":{Math.Sqrt(errSq / normSq):F5},\"mean_abs_error\":{absSum / count:E3}}}");
            }
        return 0;
    }

    private static (double Relative, double MeanAbs) Error(float* values, long n, QuantType type, bool dq)
    {
        using var q = Quantized4BitTensor.Quantize(values, DType.F32, n, [n], type, 64, dq);
        using var restored = q.Dequantize();
        double errSq = 0, normSq = 0, abs = 0;
        for (long i = 0; i < n; i++)
        {
            double d = values[i] - restored.Pointer[i];
            errSq += d * d;
            normSq += (double)values[i] * values[i];
            abs += Math.Abs(d);
        }
        return (Math.Sqrt(errSq / normSq), abs / n);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    private static NativeBuffer<float> Random(long length, ulong seed)
    {
        var buffer = new NativeBuffer<float>(length, clear: false);
        var rng = new Rng(seed);
        for (long i = 0; i < length; i += int.MaxValue / 2)
            rng.FillNormal(buffer.Slice(i, (int)Math.Min(int.MaxValue / 2, length - i)), 0f, 1f);
        return buffer;
    }
}
