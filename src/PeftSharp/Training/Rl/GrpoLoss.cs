namespace PeftSharp.Training.Rl;

/// <summary>
/// TRL's GRPOTrainer arithmetic on plain arrays: group-relative advantages from weighted rewards, and the per-token clipped
/// objective with its gradient by every completion token's log-prob (so the model's backward is one scalar function of the
/// per-token log-probs).
/// </summary>
public static class GrpoLoss
{
    /// <summary>
    /// rewards = Σ_f w_f r_f (NaN rewards left out, as nansum); advantages = rewards − mean of the prompt's group, divided by
    /// (std + 1e-4) of the group (scale "group"), of the whole batch ("batch") or not ("none"); std is the unbiased one (torch.std).
    /// Std is the std each row was scaled by (the group's with "none"), which TRL logs as reward_std and frac_reward_zero_std.
    /// Rows are grouped consecutively: rows g·G..g·G+G−1 are one prompt's completions.
    /// </summary>
    public static (double[] Rewards, double[] Advantages, double[] Std) Advantages(double[][] perFunction, IReadOnlyList<double>? weights, int groupSize, string scale)
    {
        int n = perFunction.Length;
        if (n % groupSize != 0) throw new ArgumentException($"{n} rows are not whole groups of {groupSize}.");
        var rewards = new double[n];
        for (int i = 0; i < n; i++)
            for (int f = 0; f < perFunction[i].Length; f++)
                if (!double.IsNaN(perFunction[i][f])) rewards[i] += perFunction[i][f] * (weights?[f] ?? 1.0);
        var advantages = new double[n];
        var groupStd = new double[n];
        for (int g = 0; g < n; g += groupSize)
        {
            var (mean, std) = MeanStd(rewards.AsSpan(g, groupSize));
            for (int i = g; i < g + groupSize; i++) { advantages[i] = rewards[i] - mean; groupStd[i] = std; }
        }
        // TRL's std_rewards: the batch's std with "batch", else the group's (logged as reward_std even with "none").
        if (scale == "batch") Array.Fill(groupStd, MeanStd(rewards).Std);
        if (scale != "none")
            for (int i = 0; i < n; i++) advantages[i] /= groupStd[i] + 1e-4;
        return (rewards, advantages, groupStd);
    }

    /// <summary>Mean and unbiased standard deviation (NaN for one value, as torch.std).</summary>
    public static (double Mean, double Std) MeanStd(ReadOnlySpan<double> x)
    {
        double mean = 0;
        foreach (var v in x) mean += v;
        mean /= x.Length;
        double ss = 0;
        foreach (var v in x) ss += (v - mean) * (v - mean);
        return (mean, x.Length > 1 ? Math.Sqrt(ss / (x.Length - 1)) : double.NaN);
    }

    /// <summary>
    /// TRL's _compute_loss for one batch of completions: per token, ratio = exp(logp − old) (old = logp detached when null:
    /// the ratio is exactly 1), loss_t = −min(ratio·A, clip(ratio, 1−ε_low, 1+ε_high)·A) + β·(exp(ref − logp) − (ref − logp) − 1);
    /// reduced over the mask by loss_type: grpo (per-sequence mean, then mean), bnpo and dapo (sum over all tokens / their
    /// count), dr_grpo (sum / (rows · max_completion_length)). Returns the loss, d loss / d logp per token, and the metrics
    /// (kl with β ≠ 0; clip_ratio/low_mean, high_mean, region_mean: masked token means).
    /// </summary>
    public static (double Loss, double[][] Gradient, Dictionary<string, double> Metrics) Compute(GrpoOptions options, double[][] logps,
        double[][]? oldLogps, double[][]? refLogps, double[] advantages, bool[][] mask)
    {
        int n = logps.Length;
        double lo = 1 - options.EpsilonLow, hi = 1 + options.EpsilonHighOrLow, beta = options.Beta;
        var gradient = new double[n][];
        double totalTokens = 0;
        var rowTokens = new double[n];
        for (int i = 0; i < n; i++)
        {
            for (int t = 0; t < logps[i].Length; t++) if (mask[i][t]) rowTokens[i]++;
            totalTokens += rowTokens[i];
        }
        double loss = 0, kl = 0, low = 0, high = 0, region = 0;
        for (int i = 0; i < n; i++)
        {
            int len = logps[i].Length;
            gradient[i] = new double[len];
            double a = advantages[i];
            // The weight of token (i, t)'s per-token loss in the reduced loss.
            double weight = options.LossType switch
            {
                "grpo" => 1.0 / Math.Max(1.0, rowTokens[i]) / n,
                "dr_grpo" => 1.0 / ((double)n * options.MaxCompletionLength),
                _ => 1.0 / Math.Max(1.0, totalTokens),
            };
            for (int t = 0; t < len; t++)
            {
                if (!mask[i][t]) continue;
                double lp = logps[i][t];
                double logRatio = oldLogps == null ? 0 : lp - oldLogps[i][t];
                double ratio = Math.Exp(logRatio);
                double clipped = Math.Clamp(ratio, lo, hi);
                bool clampActive = ratio < lo || ratio > hi;
                double t1 = ratio * a, t2 = clipped * a;
                double d1 = ratio * a, d2 = clampActive ? 0 : ratio * a;   // d term / d logp
                double value, dValue;
                if (t1 < t2) { value = t1; dValue = d1; }
                else if (t2 < t1) { value = t2; dValue = d2; }
                else { value = t1; dValue = 0.5 * (d1 + d2); }   // torch.min splits the gradient of a tie
                double perToken = -value, dPerToken = -dValue;
                if (beta != 0)
                {
                    double diff = refLogps![i][t] - lp;
                    double k = Math.Exp(diff) - diff - 1;
                    perToken += beta * k;
                    dPerToken += beta * (1 - Math.Exp(diff));
                    kl += k;
                }
                loss += weight * perToken;
                gradient[i][t] = weight * dPerToken;
                bool isLow = ratio < lo && a < 0, isHigh = ratio > hi && a > 0;
                if (isLow) low++;
                if (isHigh) high++;
                if (isLow || isHigh) region++;
            }
        }
        double denom = Math.Max(1.0, totalTokens);
        var metrics = new Dictionary<string, double>
        {
            ["clip_ratio/low_mean"] = low / denom, ["clip_ratio/high_mean"] = high / denom, ["clip_ratio/region_mean"] = region / denom,
        };
        if (beta != 0) metrics["kl"] = kl / denom;
        return (loss, gradient, metrics);
    }
}
