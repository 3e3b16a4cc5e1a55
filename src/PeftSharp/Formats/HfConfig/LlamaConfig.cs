using System.Text.Json.Nodes;

namespace PeftSharp.Formats.HfConfig;

/// <summary>
/// config.json of the Llama family: model_type "llama", "mistral" or "qwen2" (one architecture:
/// RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP). Defaults follow transformers'
/// LlamaConfig / MistralConfig / Qwen2Config for the given model type.
/// </summary>
public sealed class LlamaConfig : ModelConfig
{
    /// <summary>A config holding transformers' defaults for <paramref name="modelType"/> ("llama", "mistral" or "qwen2").</summary>
    public LlamaConfig(string modelType = "llama")
    {
        ModelType = modelType switch
        {
            "llama" or "mistral" or "qwen2" => modelType,
            _ => throw new ArgumentException($"'{modelType}' is not a Llama-family model type (llama, mistral, qwen2).", nameof(modelType)),
        };
        VocabSize = IsQwen2 ? 151936 : 32000;
        IntermediateSize = modelType switch { "mistral" => 14336, "qwen2" => 22016, _ => 11008 };
        KeyValueHeadCount = modelType switch { "mistral" => 8, _ => 32 };
        MaxPositionEmbeddings = modelType switch { "mistral" => 4096 * 32, "qwen2" => 32768, _ => 2048 };
        SlidingWindow = modelType == "llama" ? null : 4096;
        if (!IsQwen2)
        {
            BosTokenId = 1;
            EosTokenIds = [2];
        }
    }

    public override string ModelType { get; }
    private bool IsQwen2 => ModelType == "qwen2";

    protected override string DefaultArchitecture => ModelType switch
    {
        "mistral" => "MistralForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        _ => "LlamaForCausalLM",
    };

    public override int HiddenSize { get; set; } = 4096;
    public int IntermediateSize { get; set; }
    public override int LayerCount { get; set; } = 32;
    public override int HeadCount { get; set; } = 32;
    public int KeyValueHeadCount { get; set; }

    /// <summary>Per-head width: "head_dim", or hidden_size / num_attention_heads when absent.</summary>
    public int HeadDim { get; set; } = 128;

    public override int MaxPositionEmbeddings { get; set; }
    public double RmsNormEps { get; set; } = 1e-6;
    public double RopeTheta { get; set; } = 10000.0;
    public RopeScaling? RopeScaling { get; set; }
    public string HiddenAct { get; set; } = "silu";

    /// <summary>"attention_bias" (llama): biases on q/k/v/o.</summary>
    public bool AttentionBias { get; set; }

    /// <summary>"mlp_bias" (llama).</summary>
    public bool MlpBias { get; set; }

    /// <summary>True when q_proj, k_proj and v_proj carry biases: always for qwen2, else attention_bias.</summary>
    public bool QkvBias => IsQwen2 || AttentionBias;

    /// <summary>True when o_proj carries a bias (llama's attention_bias; never for qwen2 or mistral).</summary>
    public bool OutputBias => ModelType == "llama" && AttentionBias;

    /// <summary>"sliding_window" as written (mistral, qwen2).</summary>
    public int? SlidingWindow { get; set; }

    /// <summary>"use_sliding_window" (qwen2 only; false by default).</summary>
    public bool UseSlidingWindow { get; set; }

    /// <summary>"max_window_layers" (qwen2 only).</summary>
    public int MaxWindowLayers { get; set; } = 28;

    /// <summary>The attention window the model actually uses: mistral's sliding_window; qwen2's only when use_sliding_window; null for llama.</summary>
    public int? EffectiveSlidingWindow => ModelType switch
    {
        "mistral" => SlidingWindow,
        "qwen2" => UseSlidingWindow ? SlidingWindow : null,
        _ => null,
    };

    private protected override void ReadKeys(JsonKeys keys)
    {
        ReadCommon(keys, VocabSize, defaultTie: false, defaultBos: BosTokenId, defaultEos: EosTokenIds);
        HiddenSize = keys.PositiveInt("hidden_size", 4096);
        IntermediateSize = keys.PositiveInt("intermediate_size", IntermediateSize);
        LayerCount = keys.PositiveInt("num_hidden_layers", 32);
        HeadCount = keys.PositiveInt("num_attention_heads", 32);
        // Absent: the model type's default (llama: = heads); explicit null: = heads.
        KeyValueHeadCount = keys.Has("num_key_value_heads") || ModelType == "llama"
            ? keys.IntOrNull("num_key_value_heads") ?? HeadCount
            : KeyValueHeadCount;
        HeadDim = keys.IntOrNull("head_dim") ?? HiddenSize / HeadCount;
        MaxPositionEmbeddings = keys.PositiveInt("max_position_embeddings", MaxPositionEmbeddings);
        RmsNormEps = keys.Double("rms_norm_eps", 1e-6);
        var ropeParameters = keys.ObjectOrNull("rope_parameters");
        RopeTheta = keys.DoubleOrNull("rope_theta")
            ?? (ropeParameters != null ? new JsonKeys(ropeParameters, keys.Source).DoubleOrNull("rope_theta") : null)
            ?? 10000.0;
        RopeScaling = RopeScaling.Read(keys.ObjectOrNull("rope_scaling"), keys.Source, "rope_scaling")
            ?? RopeScaling.Read(ropeParameters, keys.Source, "rope_parameters");
        HiddenAct = keys.StringOrNull("hidden_act") ?? "silu";
        AttentionBias = keys.Bool("attention_bias", false);
        MlpBias = keys.Bool("mlp_bias", false);
        SlidingWindow = keys.Has("sliding_window") ? keys.IntOrNull("sliding_window") : SlidingWindow;
        UseSlidingWindow = keys.Bool("use_sliding_window", false);
        MaxWindowLayers = keys.Int("max_window_layers", 28);

        Require(KeyValueHeadCount > 0 && HeadCount % KeyValueHeadCount == 0, keys.Source,
            $"num_attention_heads {HeadCount} is not a multiple of num_key_value_heads {KeyValueHeadCount}");
        Require(HeadDim > 0 && HeadDim % 2 == 0, keys.Source, $"head_dim {HeadDim} must be a positive even number (rotary embeddings rotate pairs)");
        if (RopeScaling is { RopeType: "llama3" } r)
            Require(r.LowFreqFactor != null && r.HighFreqFactor != null && r.OriginalMaxPositionEmbeddings != null && r.HighFreqFactor != r.LowFreqFactor,
                keys.Source, "rope_scaling of type llama3 needs factor, low_freq_factor, high_freq_factor (different) and original_max_position_embeddings");
    }

    private protected override void WriteKeys(JsonObject json)
    {
        json["hidden_size"] = HiddenSize;
        json["intermediate_size"] = IntermediateSize;
        json["num_hidden_layers"] = LayerCount;
        json["num_attention_heads"] = HeadCount;
        json["num_key_value_heads"] = KeyValueHeadCount;
        json["head_dim"] = HeadDim;
        json["max_position_embeddings"] = MaxPositionEmbeddings;
        json["rms_norm_eps"] = PythonJson.Float(RmsNormEps);
        json["hidden_act"] = HiddenAct;
        if (json["rope_parameters"] is JsonObject parameters)
        {
            parameters["rope_theta"] = PythonJson.Float(RopeTheta);
            if (RopeScaling != null) RopeScaling.WriteTo(parameters);
        }
        else
        {
            json["rope_theta"] = PythonJson.Float(RopeTheta);
            if (RopeScaling == null) json["rope_scaling"] = null;
            else
            {
                var scaling = json["rope_scaling"] as JsonObject ?? new JsonObject();
                RopeScaling.WriteTo(scaling);
                json["rope_scaling"] = scaling;
            }
        }
        if (ModelType == "llama")
        {
            json["attention_bias"] = AttentionBias;
            json["mlp_bias"] = MlpBias;
        }
        else json["sliding_window"] = SlidingWindow;
        if (IsQwen2)
        {
            json["use_sliding_window"] = UseSlidingWindow;
            json["max_window_layers"] = MaxWindowLayers;
        }
    }

    /// <summary>
    /// The rotary inverse frequencies (head_dim / 2 values), computed in float32 in the same order of
    /// operations as transformers: default 1 / theta^(2i/d); "linear" divides by factor; "llama3"
    /// (_compute_llama3_parameters) keeps high frequencies, divides low ones by factor and blends between.
    /// </summary>
    public float[] ComputeInverseFrequencies()
    {
        int dim = HeadDim;
        var inv = new float[dim / 2];
        float theta = (float)RopeTheta;
        for (int i = 0; i < inv.Length; i++)
            inv[i] = 1f / MathF.Pow(theta, (float)(2 * i) / dim);
        switch (RopeScaling?.RopeType)
        {
            case null:
                break;
            case "linear":
                for (int i = 0; i < inv.Length; i++) inv[i] /= (float)RopeScaling.Factor;
                break;
            case "llama3":
                ApplyLlama3(inv, RopeScaling);
                break;
            default:
                throw new PeftSharpException($"{SourcePath ?? FileName}: rope_scaling type '{RopeScaling.RopeType}' is not supported (supported: llama3, linear).");
        }
        return inv;
    }

    private static void ApplyLlama3(float[] inv, RopeScaling scaling)
    {
        float factor = (float)scaling.Factor;
        float low = (float)scaling.LowFreqFactor!.Value;
        double oldContext = scaling.OriginalMaxPositionEmbeddings!.Value;
        float lowFreqWavelen = (float)(oldContext / scaling.LowFreqFactor.Value);
        float highFreqWavelen = (float)(oldContext / scaling.HighFreqFactor!.Value);
        float twoPi = (float)(2 * Math.PI);
        float range = (float)(scaling.HighFreqFactor.Value - scaling.LowFreqFactor.Value);
        for (int i = 0; i < inv.Length; i++)
        {
            float wavelen = twoPi / inv[i];
            float scaled = wavelen > lowFreqWavelen ? inv[i] / factor : inv[i];
            float smooth = ((float)oldContext / wavelen - low) / range;
            float smoothed = (1f - smooth) * scaled / factor + smooth * scaled;
            bool medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
            inv[i] = medium ? smoothed : scaled;
        }
    }
}
