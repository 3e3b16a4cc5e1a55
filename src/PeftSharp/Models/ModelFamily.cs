using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Models;

/// <summary>
/// Everything PeftSharp knows about one architecture family, in one record: the model_type values it covers, its
/// module tree (<see cref="ModelSkeleton"/>), the model class, PEFT's default target modules, the activation model the
/// planner uses and the recipe's dropout. Code that used to switch on model_type asks <see cref="Of(ModelConfig)"/>;
/// a new architecture is one more record here (and its config class in Formats/HfConfig).
/// </summary>
public sealed record ModelFamily
{
    public required string Name { get; init; }
    /// <summary>config.json's model_type values of the family.</summary>
    public required IReadOnlyList<string> ModelTypes { get; init; }
    /// <summary>PEFT's default target_modules for the family (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).</summary>
    public required IReadOnlyList<string> DefaultTargetModules { get; init; }
    /// <summary>The recipe's lora_dropout for small data.</summary>
    public double SmallDataDropout { get; init; } = 0.05;
    internal Func<ModelConfig, ModelSkeleton> Skeleton { get; init; } = null!;
    internal Func<ModelConfig, WeightSource, CausalLM> Build { get; init; } = null!;
    /// <summary>Floats per token a decoder layer's forward produces (each op output once), for the planner.</summary>
    internal Func<ModelConfig, long> LayerFloatsPerToken { get; init; } = null!;
    /// <summary>Per-row statistics a decoder layer saves (norm mean/rstd): per token, besides attention's per-head logsumexp.</summary>
    public required int NormStatsPerToken { get; init; }
    /// <summary>Embedding outputs per token, in units of the hidden size (GPT-2: token, position and their sum).</summary>
    public required int EmbeddingOutputs { get; init; }
    /// <summary>Statistics per token of the final norm (LayerNorm: mean and rstd; RMSNorm: rstd).</summary>
    public required int FinalNormStats { get; init; }

    public static ModelFamily Gpt2 { get; } = new()
    {
        Name = "gpt2",
        ModelTypes = ["gpt2"],
        DefaultTargetModules = ["c_attn"],
        SmallDataDropout = 0.1,
        Skeleton = c => ModelSkeleton.Gpt2((Gpt2Config)c),
        Build = (c, w) => new Gpt2Model((Gpt2Config)c, w),
        LayerFloatsPerToken = c =>
        {
            long e = c.HiddenSize, inner = ((Gpt2Config)c).IntermediateSize;
            // ln_1, c_attn (3E), q/k/v split copies (3E), attention out, c_proj, residual, ln_2, c_fc, gelu, mlp c_proj, residual
            return e + 3 * e + 3 * e + e + e + e + e + inner + inner + e + e;
        },
        NormStatsPerToken = 4,
        EmbeddingOutputs = 3,
        FinalNormStats = 2,
    };

    public static ModelFamily Llama { get; } = new()
    {
        Name = "llama",
        ModelTypes = ["llama", "mistral", "qwen2"],
        DefaultTargetModules = ["q_proj", "v_proj"],
        Skeleton = c => ModelSkeleton.Llama((LlamaConfig)c),
        Build = (c, w) => new LlamaModel((LlamaConfig)c, w),
        LayerFloatsPerToken = c =>
        {
            var l = (LlamaConfig)c;
            long h = l.HiddenSize, q = (long)l.HeadCount * l.HeadDim, kv = (long)l.KeyValueHeadCount * l.HeadDim, i = l.IntermediateSize;
            // norm, q, k, v, rope q, rope k, attention out, o_proj, residual, norm, gate, up, swiglu, down, residual
            return 6 * h + 3 * q + 3 * kv + 3 * i;
        },
        NormStatsPerToken = 2,
        EmbeddingOutputs = 1,
        FinalNormStats = 1,
    };

    public static IReadOnlyList<ModelFamily> All { get; } = [Gpt2, Llama];

    /// <summary>The family of a model_type, or null when PeftSharp does not support it.</summary>
    public static ModelFamily? ForModelType(string? modelType) => All.FirstOrDefault(f => f.ModelTypes.Contains(modelType ?? ""));

    /// <summary>The family of a parsed config.</summary>
    public static ModelFamily Of(ModelConfig config) => ForModelType(config.ModelType)
        ?? throw new PeftSharpException($"model_type '{config.ModelType}' is not supported; supported: {string.Join(", ", ModelConfig.SupportedModelTypes)}.");
}
