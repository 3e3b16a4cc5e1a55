using System.Numerics.Tensors;
using PeftSharp.Models;

namespace PeftSharp.Training.Metrics;

/// <summary>
/// Minimal greedy decoding (argmax each step) through <see cref="ICausalLM.StartDecoding"/>, one
/// sequence at a time, for generation metrics. Not the sampler: generation with temperature, top-p and
/// the rest lives in the generation driver; this is deliberately the smallest loop that BLEU needs.
/// </summary>
public static class GreedyDecoding
{
    /// <summary>The new tokens after <paramref name="prompt"/>: up to <paramref name="maxNewTokens"/>, stopping after any of <paramref name="stopIds"/> (not included).</summary>
    public static int[] Generate(ICausalLM model, int[] prompt, int maxNewTokens, IReadOnlyCollection<int> stopIds)
    {
        if (prompt.Length == 0) throw new ArgumentException("Greedy decoding needs at least one prompt token.", nameof(prompt));
        using var session = model.StartDecoding(1, prompt.Length + maxNewTokens);
        var logits = new float[session.VocabSize];
        var ones = new int[prompt.Length];
        Array.Fill(ones, 1);
        session.Append(prompt, ones, prompt.Length, logits);
        var output = new List<int>(maxNewTokens);
        int[] one = [0], mask = [1];
        for (int i = 0; i < maxNewTokens; i++)
        {
            int next = TensorPrimitives.IndexOfMax(logits);
            if (stopIds.Contains(next)) break;
            output.Add(next);
            if (i + 1 == maxNewTokens) break;
            one[0] = next;
            session.Append(one, mask, 1, logits);
        }
        return output.ToArray();
    }
}
