using PeftSharp.Tensors;

namespace PeftSharp.Models.Generation;

/// <summary>
/// transformers' logits processors on one row of next-token logits, in place, and the final choice.
/// Removed tokens get -∞. Nothing here allocates: callers pass scratch buffers of the vocabulary's size.
/// </summary>
public static class LogitsProcessing
{
    /// <summary>
    /// RepetitionPenaltyLogitsProcessor: for each token in <paramref name="presentTokens"/> (each id once),
    /// a positive logit is divided by <paramref name="penalty"/> and a negative one multiplied by it.
    /// </summary>
    public static void ApplyRepetitionPenalty(Span<float> logits, ReadOnlySpan<int> presentTokens, float penalty)
    {
        foreach (int id in presentTokens)
        {
            float x = logits[id];
            logits[id] = x < 0 ? x * penalty : x / penalty;
        }
    }

    /// <summary>TemperatureLogitsWarper: logits / temperature.</summary>
    public static void ApplyTemperature(Span<float> logits, float temperature)
    {
        if (temperature == 1f) return;
        for (int i = 0; i < logits.Length; i++) logits[i] /= temperature;
    }

    /// <summary>
    /// TopKLogitsWarper: every logit below the k-th largest becomes -∞ (ties with the k-th stay).
    /// <paramref name="scratch"/> holds at least logits.Length floats.
    /// </summary>
    public static void ApplyTopK(Span<float> logits, int k, Span<float> scratch)
    {
        if (k <= 0 || k >= logits.Length) return;
        var copy = scratch[..logits.Length];
        logits.CopyTo(copy);
        float kth = SelectDescending(copy, k - 1);
        for (int i = 0; i < logits.Length; i++)
            if (logits[i] < kth) logits[i] = float.NegativeInfinity;
    }

    /// <summary>
    /// TopPLogitsWarper: sorting ascending, tokens whose cumulative probability is ≤ 1 - top_p are removed,
    /// the most likely token always kept. <paramref name="keys"/> and <paramref name="order"/> hold at least logits.Length items.
    /// </summary>
    public static void ApplyTopP(Span<float> logits, float topP, Span<float> keys, Span<int> order)
    {
        if (topP >= 1f) return;
        int n = 0;
        float max = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
        {
            float x = logits[i];
            if (float.IsNegativeInfinity(x)) continue;
            keys[n] = x;
            order[n++] = i;
            if (x > max) max = x;
        }
        if (n <= 1) return;
        keys[..n].Sort(order[..n]);
        double sum = 0;
        for (int j = 0; j < n; j++) sum += Math.Exp(keys[j] - max);
        double cumulative = 0, threshold = 1.0 - topP;
        for (int j = 0; j < n - 1; j++)
        {
            cumulative += Math.Exp(keys[j] - max) / sum;
            if (cumulative > threshold) break;
            logits[order[j]] = float.NegativeInfinity;
        }
    }

    /// <summary>The index of the largest logit; ties go to the lowest index.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        float bestValue = logits[0];
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > bestValue) { bestValue = logits[i]; best = i; }
        return best;
    }

    /// <summary>A draw from softmax(logits) (-∞ entries are never drawn).</summary>
    public static int SampleSoftmax(ReadOnlySpan<float> logits, Rng rng)
    {
        float max = float.NegativeInfinity;
        foreach (float x in logits) if (x > max) max = x;
        double sum = 0;
        foreach (float x in logits) sum += Math.Exp(x - max);
        double target = rng.NextDouble() * sum, cumulative = 0;
        int last = -1;
        for (int i = 0; i < logits.Length; i++)
        {
            double p = Math.Exp(logits[i] - max);
            if (p == 0) continue;
            cumulative += p;
            last = i;
            if (cumulative > target) return i;
        }
        return last;
    }

    /// <summary>The value that would sit at <paramref name="index"/> if <paramref name="values"/> were sorted descending (reorders it).</summary>
    private static float SelectDescending(Span<float> values, int index)
    {
        int lo = 0, hi = values.Length - 1;
        while (lo < hi)
        {
            float pivot = MedianOfThree(values[lo], values[lo + (hi - lo) / 2], values[hi]);
            int i = lo, j = hi;
            while (i <= j)
            {
                while (values[i] > pivot) i++;
                while (values[j] < pivot) j--;
                if (i <= j)
                {
                    (values[i], values[j]) = (values[j], values[i]);
                    i++;
                    j--;
                }
            }
            if (index <= j) hi = j;
            else if (index >= i) lo = i;
            else return values[index];
        }
        return values[index];
    }

    private static float MedianOfThree(float a, float b, float c) =>
        a > b ? (b > c ? b : a > c ? c : a) : (a > c ? a : b > c ? c : b);
}
