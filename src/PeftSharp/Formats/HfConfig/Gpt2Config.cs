using System.Text.Json.Nodes;

namespace PeftSharp.Formats.HfConfig;

/// <summary>GPT-2 (and distilgpt2) config.json, with transformers' GPT2Config defaults.</summary>
public sealed class Gpt2Config : ModelConfig
{
    public Gpt2Config()
    {
        VocabSize = 50257;
        TieWordEmbeddings = true;
        BosTokenId = 50256;
        EosTokenIds = [50256];
    }

    public override string ModelType => "gpt2";
    protected override string DefaultArchitecture => "GPT2LMHeadModel";

    /// <summary>"n_embd".</summary>
    public override int HiddenSize { get; set; } = 768;

    /// <summary>"n_layer".</summary>
    public override int LayerCount { get; set; } = 12;

    /// <summary>"n_head".</summary>
    public override int HeadCount { get; set; } = 12;

    /// <summary>"n_positions".</summary>
    public override int MaxPositionEmbeddings { get; set; } = 1024;

    /// <summary>"n_inner" as written (null means 4 × n_embd).</summary>
    public int? Inner { get; set; }

    /// <summary>The MLP width: n_inner, or 4 × n_embd when n_inner is null.</summary>
    public int IntermediateSize => Inner ?? 4 * HiddenSize;

    public int HeadDim => HiddenSize / HeadCount;

    /// <summary>"layer_norm_epsilon".</summary>
    public double LayerNormEpsilon { get; set; } = 1e-5;

    /// <summary>"activation_function": gelu_new (the tanh approximation) by default.</summary>
    public string ActivationFunction { get; set; } = "gelu_new";

    private protected override void ReadKeys(JsonKeys keys)
    {
        ReadCommon(keys, 50257, defaultTie: true, defaultBos: 50256, defaultEos: [50256]);
        HiddenSize = keys.PositiveInt("n_embd", 768);
        LayerCount = keys.PositiveInt("n_layer", 12);
        HeadCount = keys.PositiveInt("n_head", 12);
        MaxPositionEmbeddings = keys.PositiveInt("n_positions", 1024);
        Inner = keys.IntOrNull("n_inner");
        if (Inner is <= 0) throw keys.Error("n_inner", "a positive integer or null");
        LayerNormEpsilon = keys.Double("layer_norm_epsilon", 1e-5);
        ActivationFunction = keys.StringOrNull("activation_function") ?? "gelu_new";
        Require(HiddenSize % HeadCount == 0, keys.Source, $"n_embd {HiddenSize} is not a multiple of n_head {HeadCount}");
    }

    private protected override void WriteKeys(JsonObject json)
    {
        json["n_embd"] = HiddenSize;
        json["n_layer"] = LayerCount;
        json["n_head"] = HeadCount;
        json["n_positions"] = MaxPositionEmbeddings;
        json["n_inner"] = Inner;
        json["layer_norm_epsilon"] = PythonJson.Float(LayerNormEpsilon);
        json["activation_function"] = ActivationFunction;
    }
}
