using System.Text.Json.Nodes;

namespace PeftSharp.Formats.HfConfig;

/// <summary>
/// generation_config.json: the model's default decoding settings. Absent keys take transformers'
/// GenerationConfig defaults (greedy, temperature 1, top_k 50, top_p 1, no repetition penalty).
/// </summary>
public sealed class GenerationConfig
{
    public const string FileName = "generation_config.json";

    public int? BosTokenId { get; set; }

    /// <summary>"eos_token_id": one id or a list; generation stops at any of them.</summary>
    public int[] EosTokenIds { get; set; } = [];

    public int? PadTokenId { get; set; }
    public bool DoSample { get; set; }
    public double Temperature { get; set; } = 1.0;
    public int TopK { get; set; } = 50;
    public double TopP { get; set; } = 1.0;
    public double RepetitionPenalty { get; set; } = 1.0;
    public int? MaxNewTokens { get; set; }

    /// <summary>"max_length": prompt plus generated tokens (20 in transformers when unset).</summary>
    public int? MaxLength { get; set; }

    /// <summary>The JSON as read; unknown keys survive a Write.</summary>
    public JsonObject Raw { get; private set; } = new();

    /// <summary>Reads generation_config.json from a file or a model folder.</summary>
    public static GenerationConfig Load(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, FileName) : path;
        var keys = new JsonKeys(JsonKeys.ReadFile(file), file);
        return new GenerationConfig
        {
            Raw = keys.Json,
            BosTokenId = keys.IntOrNull("bos_token_id"),
            EosTokenIds = keys.IntList("eos_token_id", []),
            PadTokenId = keys.IntOrNull("pad_token_id"),
            DoSample = keys.Bool("do_sample", false),
            Temperature = keys.Double("temperature", 1.0),
            TopK = keys.Int("top_k", 50),
            TopP = keys.Double("top_p", 1.0),
            RepetitionPenalty = keys.Double("repetition_penalty", 1.0),
            MaxNewTokens = keys.IntOrNull("max_new_tokens"),
            MaxLength = keys.IntOrNull("max_length"),
        };
    }

    /// <summary>The folder's generation_config.json, or null when it has none.</summary>
    public static GenerationConfig? TryLoad(string folder)
    {
        string file = Path.Combine(folder, FileName);
        return File.Exists(file) ? Load(file) : null;
    }

    /// <summary>Writes generation_config.json (to the path, or into it when it is a folder).</summary>
    public void Write(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, FileName) : path;
        var json = (JsonObject)Raw.DeepClone();
        json["bos_token_id"] = BosTokenId;
        json["eos_token_id"] = EosTokenIds.Length switch
        {
            0 => null,
            1 => JsonValue.Create(EosTokenIds[0]),
            _ => new JsonArray(EosTokenIds.Select(id => (JsonNode?)JsonValue.Create(id)).ToArray()),
        };
        if (PadTokenId != null) json["pad_token_id"] = PadTokenId;
        if (DoSample || json.ContainsKey("do_sample")) json["do_sample"] = DoSample;
        if (Temperature != 1.0 || json.ContainsKey("temperature")) json["temperature"] = PythonJson.Float(Temperature);
        if (TopK != 50 || json.ContainsKey("top_k")) json["top_k"] = TopK;
        if (TopP != 1.0 || json.ContainsKey("top_p")) json["top_p"] = PythonJson.Float(TopP);
        if (RepetitionPenalty != 1.0 || json.ContainsKey("repetition_penalty")) json["repetition_penalty"] = PythonJson.Float(RepetitionPenalty);
        if (MaxNewTokens != null) json["max_new_tokens"] = MaxNewTokens;
        if (MaxLength != null) json["max_length"] = MaxLength;
        PythonJson.WriteFile(file, json);
    }
}
