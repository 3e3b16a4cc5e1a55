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
        => Models.Generation.Generator.GenerateGreedy(model, prompt, maxNewTokens, stopIds);
}
