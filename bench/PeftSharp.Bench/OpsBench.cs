using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `ops [--tokens T] [--heads H] [--kv-heads Hkv] [--head-dim D] [--vocab V]`: fused attention forward and
/// backward, RMSNorm/LayerNorm, SwiGLU and cross-entropy on one sequence; one JSON line per kernel.
/// </summary>
public static unsafe class OpsBench
{
    public static int Run(string[] args)
    {
        int tokens = Option(args, "--tokens", 512), heads = Option(args, "--heads", 12), kvHeads = Option(args, "--kv-heads", 12);
        int headDim = Option(args, "--head-dim", 64), vocab = Option(args, "--vocab", 50257);
        int channels = heads * headDim;
        var rng = new Rng(1);
        using var q = Filled(rng, (long)tokens * channels);
        using var k = Filled(rng, (long)tokens * kvHeads * headDim);
        using var v = Filled(rng, k.Length);
        using var o = new NativeBuffer<float>(q.Length);
        using var dq = new NativeBuffer<float>(q.Length);
        using var dk = new NativeBuffer<float>(k.Length);
        using var dv = new NativeBuffer<float>(k.Length);
        using var lse = new NativeBuffer<float>((long)heads * tokens);
        using var w = Filled(rng, channels);
        using var stat = new NativeBuffer<float>(tokens);
        using var logits = Filled(rng, (long)tokens * vocab);
        using var losses = new NativeBuffer<float>(tokens);
        var targets = new int[tokens];
        for (int i = 0; i < tokens; i++) targets[i] = rng.NextInt(vocab);

        double attentionFlops = 2.0 * 2 * heads * headDim * tokens * (tokens + 1) / 2; // QKᵀ and PV, causal half
        Report("attention_forward", tokens, attentionFlops, () =>
            Attention.Forward(q.Pointer, k.Pointer, v.Pointer, null, null, o.Pointer, lse.Pointer, 1, tokens, heads, kvHeads, headDim));
        Report("attention_backward", tokens, 2.5 * attentionFlops, () =>
            Attention.Backward(q.Pointer, k.Pointer, v.Pointer, null, null, o.Pointer, lse.Pointer, q.Pointer, dq.Pointer, dk.Pointer, dv.Pointer, 1, tokens, heads, kvHeads, headDim));
        Report("rmsnorm_forward", tokens, 3.0 * tokens * channels, () => Norms.RmsNormForward(q.Pointer, w.Pointer, stat.Pointer, o.Pointer, tokens, channels, 1e-6f));
        Report("layernorm_backward", tokens, 8.0 * tokens * channels, () =>
            Norms.LayerNormBackward(q.Pointer, w.Pointer, stat.Pointer, stat.Pointer, q.Pointer, dq.Pointer, dk.Pointer, dv.Pointer, tokens, channels));
        Report("swiglu_forward", tokens, 4.0 * q.Length, () => Activations.SwiGluForward(q.Pointer, dq.Pointer, o.Pointer, q.Length));
        fixed (int* t = targets)
        {
            int* tp = t;
            Report("cross_entropy_forward", tokens, 3.0 * tokens * vocab, () => CrossEntropy.Forward(logits.Pointer, tp, losses.Pointer, stat.Pointer, tokens, vocab));
        }
        return 0;
    }

    private static void Report(string name, int tokens, double flops, Action run)
    {
        run();
        int iterations = 0;
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed.TotalSeconds < 1.0 || iterations < 3)
        {
            run();
            iterations++;
        }
        double seconds = watch.Elapsed.TotalSeconds / iterations;
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            bench = "ops",
            kernel = name,
            simd = Simd.Path.ToString(),
            tokens,
            ms = Math.Round(seconds * 1e3, 3),
            gflops = Math.Round(flops / seconds / 1e9, 2),
            tokens_per_s = Math.Round(tokens / seconds),
        }));
    }

    private static NativeBuffer<float> Filled(Rng rng, long length)
    {
        var buffer = new NativeBuffer<float>(length);
        for (long i = 0; i < length; i += int.MaxValue)
            rng.FillNormal(new Span<float>(buffer.Pointer + i, (int)Math.Min(int.MaxValue, length - i)), 0f, 1f);
        return buffer;
    }

    private static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
    }
}
