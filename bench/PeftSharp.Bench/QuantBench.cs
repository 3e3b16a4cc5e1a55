using System.Diagnostics;
using System.Globalization;
using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `quant [--size N] [--reps R]`: 4-bit quantize and dequantize throughput on an N × N N(0, 1) matrix
/// (default 4096) for nf4/fp4 with and without double quantization, dequantize per SIMD path and as
/// 64 × 256 GEMM panels, and the round-trip error. One JSON line per case.
/// `quant --gemm [--threads 1,2] [--rounds 5] [--tokens 512] [--shapes OUTxIN,...] [--cpu-time] [--forward]`, `quant --bits [CONFIG_DIR]` and `quant --error`:
/// the QLoRA measurements of <see cref="QuantGemmBench"/>.
/// </summary>
public static unsafe class QuantBench
{
    public static int Run(string[] args)
    {
        if (args.Length > 0 && args[0] == "--gemm") return QuantGemmBench.RunGemm(args[1..]);
        if (args.Length > 0 && args[0] == "--bits")
            return QuantGemmBench.RunBits(args.Length > 1 ? args[1] : Path.Combine("tests", "PeftSharp.Tests", "Golden", "configs"));
        if (args.Length > 0 && args[0] == "--error") return QuantGemmBench.RunError();
        int size = 4096, reps = 5;
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (args[i] == "--size") size = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
            else if (args[i] == "--reps") reps = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
        }
        long n = (long)size * size;
        var values = new float[n];
        var random = new Random(42);
        for (long i = 0; i < n; i += 2)
        {
            double r = Math.Sqrt(-2 * Math.Log(1.0 - random.NextDouble())), a = 2 * Math.PI * random.NextDouble();
            values[i] = (float)(r * Math.Cos(a));
            if (i + 1 < n) values[i + 1] = (float)(r * Math.Sin(a));
        }
        using var output = new NativeBuffer<float>(n, clear: false);
        WarmUp(values, output);

        foreach (var type in new[] { QuantType.Nf4, QuantType.Fp4 })
        foreach (bool doubleQuant in new[] { false, true })
        {
            Quantized4BitTensor? q = null;
            double quantizeSeconds = Best(reps, () =>
            {
                q?.Dispose();
                q = Quantized4BitTensor.Quantize(values, [size, size], type, 64, doubleQuant);
            });
            double dequantizeSeconds = Best(reps, () => q!.Dequantize(output.Span));
            double bf16Seconds = Best(reps, () => q!.Dequantize(output.Span, roundToBFloat16: true));
            q!.Dequantize(output.Span);
            double abs = 0, sq = 0;
            var restored = output.Span;
            for (int i = 0; i < restored.Length; i++)
            {
                double d = values[i] - restored[i];
                abs += Math.Abs(d);
                sq += d * d;
            }
            Emit($"{{\"bench\":\"quant\",\"case\":\"{type.BnbName()}\",\"double_quant\":{(doubleQuant ? "true" : "false")},\"rows\":{size},\"cols\":{size},\"simd\":\"{Simd.Path}\"," +
                 $"\"quantize_melem_s\":{n / quantizeSeconds / 1e6:F1},\"quantize_input_gb_s\":{n * 4 / quantizeSeconds / 1e9:F2}," +
                 $"\"dequantize_f32_gb_s\":{n * 4 / dequantizeSeconds / 1e9:F2},\"dequantize_bf16_rounded_gb_s\":{n * 4 / bf16Seconds / 1e9:F2}," +
                 $"\"mean_abs_error\":{abs / n:F5},\"rms_error\":{Math.Sqrt(sq / n):F5},\"bits_per_parameter\":{q.BitsPerParameter:F4}}}");
            if (type == QuantType.Nf4)
            {
                foreach (var path in new[] { SimdPath.Scalar, SimdPath.Vector256, SimdPath.Vector512 })
                {
                    using var _ = Simd.Force(path);
                    double s = Best(reps, () => q!.Dequantize(output.Span));
                    Emit($"{{\"bench\":\"quant\",\"case\":\"nf4_dequantize_path\",\"double_quant\":{(doubleQuant ? "true" : "false")},\"simd\":\"{Simd.Path}\",\"dequantize_f32_gb_s\":{n * 4 / s / 1e9:F2}}}");
                }
                const int panelRows = 64, panelCols = 256;
                double panelSeconds = Best(reps, () =>
                {
                    for (int r = 0; r < size; r += panelRows)
                    for (int c = 0; c < size; c += panelCols)
                        q!.DequantizeRows(r, Math.Min(panelRows, size - r), c, Math.Min(panelCols, size - c), output.Pointer, panelCols);
                });
                Emit($"{{\"bench\":\"quant\",\"case\":\"nf4_dequantize_panels_64x256\",\"double_quant\":{(doubleQuant ? "true" : "false")},\"simd\":\"{Simd.Path}\",\"dequantize_f32_gb_s\":{n * 4 / panelSeconds / 1e9:F2}}}");
            }
            q.Dispose();
        }
        return 0;
    }

    /// <summary>Runs every kernel on a small slice for a few seconds of work so tiered JIT has optimised them before timing.</summary>
    private static void WarmUp(float[] values, NativeBuffer<float> output)
    {
        var slice = values.AsSpan(0, 256 * 256);
        for (int i = 0; i < 50; i++)
        foreach (var type in new[] { QuantType.Nf4, QuantType.Fp4 })
        foreach (bool doubleQuant in new[] { false, true })
        {
            using var q = Quantized4BitTensor.Quantize(slice, [256, 256], type, 64, doubleQuant);
            q.Dequantize(output.Span[..slice.Length]);
            q.Dequantize(output.Span[..slice.Length], roundToBFloat16: true);
            q.DequantizeRows(0, 64, 0, 256, output.Pointer, 256);
        }
    }

    private static double Best(int reps, Action action)
    {
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            var watch = Stopwatch.StartNew();
            action();
            best = Math.Min(best, watch.Elapsed.TotalSeconds);
        }
        return best;
    }

    private static void Emit(string json) => Console.WriteLine(json);
}
