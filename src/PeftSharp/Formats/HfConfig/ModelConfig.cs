using System.Text.Json.Nodes;

namespace PeftSharp.Formats.HfConfig;

/// <summary>
/// A model's config.json, typed. <see cref="Load"/> dispatches on "model_type" to
/// <see cref="Gpt2Config"/> or <see cref="LlamaConfig"/> (llama, mistral, qwen2). Keys we do not
/// model are ignored on read and kept in <see cref="Raw"/>, so <see cref="Write"/> round-trips them.
/// Defaults are transformers' defaults for each model type.
/// </summary>
public abstract class ModelConfig
{
    public const string FileName = "config.json";

    /// <summary>The model types this library can load.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = ["gpt2", "llama", "mistral", "qwen2"];

    public abstract string ModelType { get; }
    public int VocabSize { get; set; }
    public abstract int HiddenSize { get; set; }
    public abstract int LayerCount { get; set; }
    public abstract int HeadCount { get; set; }
    public abstract int MaxPositionEmbeddings { get; set; }
    public bool TieWordEmbeddings { get; set; }
    public int? BosTokenId { get; set; }

    /// <summary>End-of-sequence ids ("eos_token_id" may be one integer or a list); empty when none.</summary>
    public int[] EosTokenIds { get; set; } = [];

    public int? PadTokenId { get; set; }

    /// <summary>"torch_dtype" (or transformers 5's "dtype"): "float32", "bfloat16", "float16"...</summary>
    public string? TorchDtype { get; set; }

    /// <summary>The JSON as read (empty for a config built in code); unknown keys survive a Write.</summary>
    public JsonObject Raw { get; private set; } = new();

    /// <summary>The file this config was read from, if any.</summary>
    public string? SourcePath { get; private set; }

    /// <summary>Reads config.json from a file path or a model folder.</summary>
    public static ModelConfig Load(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, FileName) : path;
        var config = Parse(JsonKeys.ReadFile(file), file);
        config.SourcePath = Path.GetFullPath(file);
        return config;
    }

    /// <summary>Parses config.json text; <paramref name="source"/> names it in error messages.</summary>
    public static ModelConfig Parse(string json, string source = FileName)
    {
        return Parse(JsonInput.ParseObject(json, source), source);
    }

    private static ModelConfig Parse(JsonObject json, string source)
    {
        var keys = new JsonKeys(json, source);
        string modelType = keys.StringOrNull("model_type")
            ?? throw new PeftSharpException($"{source}: no \"model_type\" key; expected one of {string.Join(", ", SupportedModelTypes)}.");
        ModelConfig config = modelType switch
        {
            "gpt2" => new Gpt2Config(),
            "llama" or "mistral" or "qwen2" => new LlamaConfig(modelType),
            _ => throw new PeftSharpException($"{source}: model_type '{modelType}' is not supported; supported model types: {string.Join(", ", SupportedModelTypes)}."),
        };
        config.Raw = (JsonObject)json.DeepClone();
        config.ReadKeys(keys);
        return config;
    }

    /// <summary>Writes config.json (to <paramref name="path"/>, or into it when it is a folder) with transformers' key names.</summary>
    public void Write(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, FileName) : path;
        PythonJson.WriteFile(file, ToJson());
    }

    /// <summary>The config as transformers would save it: <see cref="Raw"/> with every modelled key updated.</summary>
    public JsonObject ToJson()
    {
        var json = (JsonObject)Raw.DeepClone();
        json["model_type"] = ModelType;
        json["vocab_size"] = VocabSize;
        json["tie_word_embeddings"] = TieWordEmbeddings;
        json["bos_token_id"] = BosTokenId;
        json["eos_token_id"] = EosTokenIds.Length switch
        {
            0 => null,
            1 => JsonValue.Create(EosTokenIds[0]),
            _ => new JsonArray(EosTokenIds.Select(id => (JsonNode?)JsonValue.Create(id)).ToArray()),
        };
        if (PadTokenId != null || json.ContainsKey("pad_token_id")) json["pad_token_id"] = PadTokenId;
        if (TorchDtype != null) json[json.ContainsKey("dtype") && !json.ContainsKey("torch_dtype") ? "dtype" : "torch_dtype"] = TorchDtype;
        if (!json.ContainsKey("architectures")) json["architectures"] = new JsonArray(DefaultArchitecture);
        WriteKeys(json);
        return json;
    }

    protected abstract string DefaultArchitecture { get; }

    private protected abstract void ReadKeys(JsonKeys keys);

    private protected abstract void WriteKeys(JsonObject json);

    private protected void ReadCommon(JsonKeys keys, int defaultVocab, bool defaultTie, int? defaultBos, int[] defaultEos)
    {
        VocabSize = keys.PositiveInt("vocab_size", defaultVocab);
        TieWordEmbeddings = keys.Bool("tie_word_embeddings", defaultTie);
        BosTokenId = keys.Has("bos_token_id") ? keys.IntOrNull("bos_token_id") : defaultBos;
        EosTokenIds = keys.IntList("eos_token_id", defaultEos);
        PadTokenId = keys.IntOrNull("pad_token_id");
        TorchDtype = keys.StringOrNull("torch_dtype") ?? keys.StringOrNull("dtype");
    }

    private protected static void Require(bool condition, string source, string message)
    {
        if (!condition) throw new PeftSharpException($"{source}: {message}.");
    }
}
