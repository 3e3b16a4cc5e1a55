using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Models.Generation;

/// <summary>
/// What one caller asks of a generation (the command line, ChatOptions, an OpenAI request); null settings fall back to
/// the model's generation_config.json. <see cref="Resolve"/> is the one place they are merged.
/// </summary>
public sealed record GenerationSettings
{
    public int? MaxNewTokens { get; init; }
    public double? Temperature { get; init; }
    public int? TopK { get; init; }
    public double? TopP { get; init; }
    public double? RepetitionPenalty { get; init; }
    public ulong? Seed { get; init; }
    /// <summary>Stop strings (transformers' stop_strings): generation ends at the first one; the text is cut before it.</summary>
    public IReadOnlyList<string>? Stop { get; init; }

    /// <summary>
    /// generation_config.json's settings (<paramref name="defaultMaxNewTokens"/> when it sets no max_new_tokens; eos and pad
    /// from the tokenizer when no config names them), overridden by these. An explicit temperature above 0, top-k or top-p
    /// turns sampling on; temperature 0 forces greedy. No seed: a random one.
    /// </summary>
    public GenerationOptions Resolve(GenerationConfig? generation, ModelConfig? model, Tokenizer? tokenizer, int defaultMaxNewTokens)
    {
        var options = GenerationOptions.FromConfig(generation, model, defaultMaxNewTokens);
        if (options.EosTokenIds.Length == 0 && tokenizer?.EosTokenId is int eos) options.EosTokenIds = [eos];
        options.PadTokenId ??= tokenizer?.PadTokenId;
        if (MaxNewTokens is int n) options.MaxNewTokens = n;
        if (Temperature is double t)
        {
            options.Temperature = t;
            options.DoSample = t > 0;
        }
        if (TopK is int k)
        {
            options.TopK = k;
            options.DoSample |= Temperature is not 0.0;
        }
        if (TopP is double p)
        {
            options.TopP = p;
            options.DoSample |= Temperature is not 0.0;
        }
        if (RepetitionPenalty is double r) options.RepetitionPenalty = r;
        if (Stop is { Count: > 0 }) options.StopStrings = Stop.ToArray();
        options.Seed = Seed ?? BitConverter.ToUInt64(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
        options.Validate();
        return options;
    }
}
