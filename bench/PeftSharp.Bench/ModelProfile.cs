using System.Diagnostics;
using System.Text.Json;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Bench;

/// <summary>
/// `model --modes profile`: each kernel a GPT-2-shaped training step runs, timed in isolation at the model's
/// shapes (batch × seq rows), with the count per step; one JSON line per kernel with ms per call, ms per step
/// and its share. Shows where a step's time goes without instrumenting the tape.
/// </summary>
public static unsafe class ModelProfile
{
    public static void Run(string model, int hidden, int heads, int layers, int vocab, int batch, int seqLen)
    {
        int n = batch * seqLen, c = hidden, d = hidden / heads, ff = 4 * hidden;
        var rng = new Rng(7);
        using var x = Filled(rng, (long)n * ff);
        using var y = Filled(rng, (long)n * Math.Max(ff, 3 * c));
        using var dy = Filled(rng, (long)n * ff);
        using var w = Filled(rng, (long)ff * c);
        using var logits = Filled(rng, (long)n * vocab);
        using var head = Filled(rng, (long)vocab * c);
        using var lse = new NativeBuffer<float>((long)n * heads);
        using var stat = new NativeBuffer<float>(n);
        var targets = new int[n];
        for (int i = 0; i < n; i++) targets[i] = rng.NextInt(vocab);
        var rows = new List<(string Name, int PerStep, double Ms)>();
        void Time(string name, int perStep, Action run) => rows.Add((name, perStep, Median(run)));

        foreach (var (name, outF, inF) in new[] { ("c_attn", 3 * c, c), ("attn_c_proj", c, c), ("c_fc", ff, c), ("mlp_c_proj", c, ff) })
        {
            Time($"{name}_fwd {n}x{outF}x{inF}", layers, () => Gemm.LinearForward(x.Pointer, w.Pointer, null, y.Pointer, n, outF, inF));
            Time($"{name}_bwd_input", layers, () => Gemm.LinearBackwardInput(dy.Pointer, w.Pointer, x.Pointer, n, outF, inF, accumulate: true));
        }
        Time($"lm_head_fwd {n}x{vocab}x{c}", 1, () => Gemm.LinearForward(x.Pointer, head.Pointer, null, logits.Pointer, n, vocab, c));
        Time("lm_head_bwd_input", 1, () => Gemm.LinearBackwardInput(logits.Pointer, head.Pointer, x.Pointer, n, vocab, c, accumulate: true));
        using (var q = Filled(rng, (long)n * c)) using (var k = Filled(rng, (long)n * c)) using (var v = Filled(rng, (long)n * c))
        using (var o = Filled(rng, (long)n * c)) using (var dOut = Filled(rng, (long)n * c)) using (var grads = new NativeBuffer<float>(3L * n * c))
        {
            Time("attention_fwd", layers, () => Attention.Forward(q.Pointer, k.Pointer, v.Pointer, null, null, o.Pointer, lse.Pointer, batch, seqLen, heads, heads, d));
            Time("attention_bwd", layers, () => Attention.Backward(q.Pointer, k.Pointer, v.Pointer, null, null, o.Pointer, lse.Pointer, dOut.Pointer,
                grads.Pointer, grads.Pointer + (long)n * c, grads.Pointer + 2L * n * c, batch, seqLen, heads, heads, d));
        }
        Time("layernorm_fwd", 2 * layers + 1, () => Norms.LayerNormForward(x.Pointer, w.Pointer, w.Pointer, stat.Pointer, stat.Pointer, y.Pointer, n, c, 1e-5f));
        Time("layernorm_bwd", 2 * layers + 1, () => Norms.LayerNormBackward(x.Pointer, w.Pointer, stat.Pointer, stat.Pointer, dy.Pointer, y.Pointer, null, null, n, c));
        Time("gelu_fwd", layers, () => Activations.GeluForward(x.Pointer, y.Pointer, (long)n * ff));
        Time("gelu_bwd", layers, () => Activations.GeluBackward(x.Pointer, dy.Pointer, y.Pointer, (long)n * ff));
        Time("residual_add", 2 * layers + 1, () => Elementwise.Add((long)n * c, x.Pointer, dy.Pointer, y.Pointer));
        fixed (int* t = targets)
        {
            int* tp = t;
            Time("cross_entropy_fwd", 1, () => CrossEntropy.Forward(logits.Pointer, tp, stat.Pointer, lse.Pointer, n, vocab));
            Time("cross_entropy_bwd", 1, () => CrossEntropy.Backward(logits.Pointer, tp, lse.Pointer, 1f, logits.Pointer, n, vocab, accumulate: false));
        }
        double total = rows.Sum(r => r.Ms * r.PerStep);
        foreach (var (name, perStep, ms) in rows)
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                bench = "model_profile", model, batch, seq_len = seqLen, kernel = name, per_step = perStep,
                ms_per_call = Math.Round(ms, 3), ms_per_step = Math.Round(ms * perStep, 1), share = Math.Round(ms * perStep / total, 3),
            }));
    }

    private static double Median(Action run)
    {
        run();
        var times = new double[5];
        for (int i = 0; i < times.Length; i++)
        {
            long start = Stopwatch.GetTimestamp();
            run();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }

    private static NativeBuffer<float> Filled(Rng rng, long length)
    {
        var buffer = new NativeBuffer<float>(length);
        for (long i = 0; i < length; i += int.MaxValue)
            rng.FillNormal(new Span<float>(buffer.Pointer + i, (int)Math.Min(int.MaxValue, length - i)), 0f, 0.1f);
        return buffer;
    }
}
