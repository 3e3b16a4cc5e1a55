using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Models.Generation;

/// <summary>
/// Decoding settings with transformers' GenerationConfig names and defaults: greedy unless
/// <see cref="DoSample"/>; when sampling, repetition penalty, temperature, top-k and top-p are
/// applied in that order before a seeded multinomial draw.
/// </summary>
public sealed class GenerationOptions
{
    /// <summary>"max_new_tokens": tokens to generate per sequence, the prompt not counted.</summary>
    public int MaxNewTokens { get; set; } = 20;

    /// <summary>"do_sample": draw from the filtered distribution; false means greedy (argmax).</summary>
    public bool DoSample { get; set; }

    /// <summary>"temperature": logits are divided by it when sampling; 0 means greedy.</summary>
    public double Temperature { get; set; } = 1.0;

    /// <summary>"top_k": keep the k most likely tokens (ties with the k-th kept); 0 disables.</summary>
    public int TopK { get; set; } = 50;

    /// <summary>"top_p": keep the smallest set of most likely tokens whose probability reaches top_p; 1 disables.</summary>
    public double TopP { get; set; } = 1.0;

    /// <summary>"repetition_penalty": tokens already in the sequence (prompt included) get positive logits divided, negative multiplied by it; 1 disables.</summary>
    public double RepetitionPenalty { get; set; } = 1.0;

    /// <summary>Seed of the sampling generators (sequence i draws from its own stream derived from it).</summary>
    public ulong Seed { get; set; }

    /// <summary>"eos_token_id": generation of a sequence ends after any of these.</summary>
    public int[] EosTokenIds { get; set; } = [];

    /// <summary>"pad_token_id": fills left padding and the steps after a sequence finished (default: the first eos id, else 0).</summary>
    public int? PadTokenId { get; set; }

    /// <summary>"stop_strings": generation of a sequence ends when its decoded text contains one; the text is cut before it.</summary>
    public IReadOnlyList<string> StopStrings { get; set; } = [];

    /// <summary>True when the next token is the argmax: not sampling, or temperature 0.</summary>
    public bool IsGreedy => !DoSample || Temperature == 0;

    /// <summary>The pad id actually used.</summary>
    public int EffectivePadTokenId => PadTokenId ?? (EosTokenIds.Length > 0 ? EosTokenIds[0] : 0);

    /// <summary>
    /// Options from a model folder's generation_config.json (null: transformers' defaults), with eos/pad
    /// ids falling back to config.json's. max_new_tokens comes from the file when set, else <paramref name="defaultMaxNewTokens"/>.
    /// </summary>
    public static GenerationOptions FromConfig(GenerationConfig? generation, ModelConfig? model = null, int defaultMaxNewTokens = 20)
    {
        var options = new GenerationOptions
        {
            MaxNewTokens = generation?.MaxNewTokens ?? defaultMaxNewTokens,
            EosTokenIds = generation is { EosTokenIds.Length: > 0 } ? generation.EosTokenIds : model?.EosTokenIds ?? [],
            PadTokenId = generation?.PadTokenId ?? model?.PadTokenId,
        };
        if (generation != null)
        {
            options.DoSample = generation.DoSample;
            options.Temperature = generation.Temperature;
            options.TopK = generation.TopK;
            options.TopP = generation.TopP;
            options.RepetitionPenalty = generation.RepetitionPenalty;
        }
        return options;
    }

    /// <summary>Throws <see cref="PeftSharpException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new PeftSharpException($"max_new_tokens must be 0 or more (got {MaxNewTokens}).");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new PeftSharpException($"temperature must be a finite number ≥ 0 (got {Temperature}).");
        if (TopK < 0) throw new PeftSharpException($"top_k must be 0 (off) or more (got {TopK}).");
        if (!(TopP > 0 && TopP <= 1)) throw new PeftSharpException($"top_p must be in (0, 1] (got {TopP}).");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) throw new PeftSharpException($"repetition_penalty must be a finite number > 0 (got {RepetitionPenalty}).");
        foreach (var s in StopStrings)
            if (string.IsNullOrEmpty(s)) throw new PeftSharpException("stop strings must not be empty.");
    }
}
