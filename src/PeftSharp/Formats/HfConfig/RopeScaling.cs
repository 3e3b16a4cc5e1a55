using System.Text.Json.Nodes;

namespace PeftSharp.Formats.HfConfig;

/// <summary>
/// "rope_scaling" (or transformers 5's "rope_parameters"): how rotary frequencies are rescaled
/// for long context. Only "llama3" and "linear" change the frequencies in this library.
/// </summary>
public sealed class RopeScaling
{
    /// <summary>"rope_type" (or the legacy "type"): "llama3", "linear", "dynamic", "yarn", ...</summary>
    public required string RopeType { get; set; }
    public double Factor { get; set; } = 1.0;
    public double? LowFreqFactor { get; set; }
    public double? HighFreqFactor { get; set; }
    public int? OriginalMaxPositionEmbeddings { get; set; }

    internal static RopeScaling? Read(JsonObject? json, string source, string key)
    {
        if (json == null) return null;
        var keys = new JsonKeys(json, $"{source} ({key})");
        string? type = keys.StringOrNull("rope_type") ?? keys.StringOrNull("type");
        if (type == null || type == "default") return null;
        return new RopeScaling
        {
            RopeType = type,
            Factor = keys.Double("factor", 1.0),
            LowFreqFactor = keys.DoubleOrNull("low_freq_factor"),
            HighFreqFactor = keys.DoubleOrNull("high_freq_factor"),
            OriginalMaxPositionEmbeddings = keys.IntOrNull("original_max_position_embeddings"),
        };
    }

    internal void WriteTo(JsonObject json)
    {
        json.Remove("type");
        json["rope_type"] = RopeType;
        json["factor"] = PythonJson.Float(Factor);
        if (LowFreqFactor is double low) json["low_freq_factor"] = PythonJson.Float(low);
        if (HighFreqFactor is double high) json["high_freq_factor"] = PythonJson.Float(high);
        if (OriginalMaxPositionEmbeddings is int original) json["original_max_position_embeddings"] = original;
    }
}
