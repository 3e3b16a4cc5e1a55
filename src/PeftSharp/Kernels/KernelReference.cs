namespace PeftSharp.Kernels;

/// <summary>
/// The naive oracles, in double precision over managed arrays: the obvious loops, written from
/// the formulas. Tests compare every SIMD path with them and take central differences of them
/// to check each hand-written backward. Slow; for tests only.
/// </summary>
public static class KernelReference
{
    public static double[] LayerNorm(double[] x, double[] weight, double[]? bias, int channels, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / channels; r++)
        {
            double mean = 0, variance = 0;
            for (int i = 0; i < channels; i++) mean += x[r * channels + i];
            mean /= channels;
            for (int i = 0; i < channels; i++) variance += Math.Pow(x[r * channels + i] - mean, 2);
            variance /= channels;
            double rstd = 1 / Math.Sqrt(variance + eps);
            for (int i = 0; i < channels; i++)
                y[r * channels + i] = (x[r * channels + i] - mean) * rstd * weight[i] + (bias?[i] ?? 0);
        }
        return y;
    }

    public static double[] RmsNorm(double[] x, double[] weight, int channels, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / channels; r++)
        {
            double ms = 0;
            for (int i = 0; i < channels; i++) ms += x[r * channels + i] * x[r * channels + i];
            double rstd = 1 / Math.Sqrt(ms / channels + eps);
            for (int i = 0; i < channels; i++) y[r * channels + i] = x[r * channels + i] * rstd * weight[i];
        }
        return y;
    }

    public static double[] Gelu(double[] x) => x.Select(v => 0.5 * v * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)))).ToArray();

    public static double[] Silu(double[] x) => x.Select(v => v / (1 + Math.Exp(-v))).ToArray();

    public static double[] SwiGlu(double[] gate, double[] up) => gate.Select((g, i) => g / (1 + Math.Exp(-g)) * up[i]).ToArray();

    public static double[] Softmax(double[] x, int channels)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / channels; r++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int i = 0; i < channels; i++) max = Math.Max(max, x[r * channels + i]);
            for (int i = 0; i < channels; i++) sum += Math.Exp(x[r * channels + i] - max);
            for (int i = 0; i < channels; i++) y[r * channels + i] = Math.Exp(x[r * channels + i] - max) / sum;
        }
        return y;
    }

    /// <summary>Mean over non-ignored rows of -log softmax(logits)[target].</summary>
    public static double CrossEntropy(double[] logits, int[] targets, int vocab)
    {
        double total = 0;
        int count = 0;
        var probabilities = Softmax(logits, vocab);
        for (int r = 0; r < targets.Length; r++)
        {
            if (targets[r] == Kernels.CrossEntropy.IgnoreIndex) continue;
            total -= Math.Log(probabilities[r * vocab + targets[r]]);
            count++;
        }
        return count == 0 ? 0 : total / count;
    }

    /// <summary>log softmax(logits)[target] per row; 0 on ignored rows.</summary>
    public static double[] TokenLogProbs(double[] logits, int[] targets, int vocab)
    {
        var y = new double[targets.Length];
        for (int r = 0; r < targets.Length; r++)
        {
            if (targets[r] == Kernels.CrossEntropy.IgnoreIndex) continue;
            double max = double.NegativeInfinity;
            for (int v = 0; v < vocab; v++) max = Math.Max(max, logits[r * vocab + v]);
            double sum = 0;
            for (int v = 0; v < vocab; v++) sum += Math.Exp(logits[r * vocab + v] - max);
            y[r] = logits[r * vocab + targets[r]] - max - Math.Log(sum);
        }
        return y;
    }

    /// <summary>y[s] = Σ x[i] over i with segments[i] = s (segments &lt; 0 are skipped).</summary>
    public static double[] SumBySegment(double[] x, int[] segments, int count)
    {
        var y = new double[count];
        for (int i = 0; i < x.Length; i++) if (segments[i] >= 0) y[segments[i]] += x[i];
        return y;
    }

    /// <summary>log σ(x) = -log(1 + e^-x), naively.</summary>
    public static double[] LogSigmoid(double[] x) => x.Select(v => -Math.Log(1 + Math.Exp(-v))).ToArray();

    public static double[] Embedding(int[] ids, double[] table, int channels)
    {
        var y = new double[ids.Length * channels];
        for (int i = 0; i < ids.Length; i++) Array.Copy(table, ids[i] * channels, y, i * channels, channels);
        return y;
    }

    /// <summary>HF rotate-half RoPE over x (N, H, D) with angles positions[n]·invFreq[i].</summary>
    public static double[] Rope(double[] x, int[] positions, double[] invFreq, int heads, int headDim)
    {
        var y = new double[x.Length];
        int half = headDim / 2;
        for (int n = 0; n < positions.Length; n++)
        for (int h = 0; h < heads; h++)
        {
            int o = (n * heads + h) * headDim;
            for (int i = 0; i < headDim; i++)
            {
                double angle = positions[n] * invFreq[i % half];
                double rotated = i < half ? -x[o + i + half] : x[o + i - half];
                y[o + i] = x[o + i] * Math.Cos(angle) + rotated * Math.Sin(angle);
            }
        }
        return y;
    }

    /// <summary>Causal GQA attention materializing each score row; Q (B,T,H,D), K/V (B,T,Hkv,D).</summary>
    public static double[] Attention(double[] q, double[] k, double[] v, int[]? attentionMask, int[]? segmentIds,
        int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        var y = new double[q.Length];
        int group = heads / kvHeads;
        double scale = 1 / Math.Sqrt(headDim);
        var weights = new double[tokens];
        for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
        for (int t = 0; t < tokens; t++)
        {
            double max = double.NegativeInfinity;
            for (int s = 0; s < tokens; s++)
            {
                bool visible = s <= t
                    && (attentionMask == null || attentionMask[b * tokens + s] != 0)
                    && (segmentIds == null || segmentIds[b * tokens + s] == segmentIds[b * tokens + t]);
                double score = double.NegativeInfinity;
                if (visible)
                {
                    score = 0;
                    for (int d = 0; d < headDim; d++)
                        score += q[((b * tokens + t) * heads + h) * headDim + d] * k[((b * tokens + s) * kvHeads + h / group) * headDim + d];
                    score *= scale;
                }
                weights[s] = score;
                max = Math.Max(max, score);
            }
            if (double.IsNegativeInfinity(max)) continue;
            double sum = 0;
            for (int s = 0; s < tokens; s++) sum += weights[s] = Math.Exp(weights[s] - max);
            for (int s = 0; s < tokens; s++)
            for (int d = 0; d < headDim; d++)
                y[((b * tokens + t) * heads + h) * headDim + d] += weights[s] / sum * v[((b * tokens + s) * kvHeads + h / group) * headDim + d];
        }
        return y;
    }
}
