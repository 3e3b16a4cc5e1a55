using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace PeftSharp.Config;

/// <summary>Reads a YAML or JSON config file into a JSON tree, with YAML's scalar typing (true, null, 1e-4, ...).</summary>
public static class ConfigTree
{
    public static JsonObject LoadFile(string path)
    {
        if (!File.Exists(path)) throw new PeftSharpException($"Config file not found: {path}");
        var text = File.ReadAllText(path);
        var ext = Path.GetExtension(path).ToLowerInvariant();
        try
        {
            return ext == ".json" ? ParseJson(text) : ParseYaml(text);
        }
        catch (PeftSharpException e) { throw new PeftSharpException($"{path}: {e.Message}"); }
    }

    public static JsonObject ParseJson(string text) =>
        Formats.JsonInput.ParseNode(text, "config", allowTrailingCommas: true, allowComments: true) as JsonObject
            ?? throw new PeftSharpException("the top level must be an object of sections (model, lora, quantization, data, training).");

    public static JsonObject ParseYaml(string text)
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(text)); }
        catch (YamlException e) { throw new PeftSharpException($"malformed YAML at line {e.Start.Line}, column {e.Start.Column}: {e.InnerException?.Message ?? e.Message}"); }
        catch (InvalidOperationException e) { throw new PeftSharpException($"malformed YAML (an unclosed bracket or quote?): {e.Message}"); }
        if (stream.Documents.Count == 0) return [];
        return Convert(stream.Documents[0].RootNode) as JsonObject
            ?? throw new PeftSharpException("the top level must be a mapping of sections (model, lora, quantization, data, training).");
    }

    /// <summary>A scalar as YAML would type it: "16" → 16, "2e-4" → 0.0002, "true" → true, "~" → null.</summary>
    public static JsonNode? ParseScalar(string value, bool quoted = false)
    {
        if (quoted) return JsonValue.Create(value);
        switch (value)
        {
            case "" or "~" or "null" or "Null" or "NULL": return null;
            case "true" or "True" or "TRUE": return JsonValue.Create(true);
            case "false" or "False" or "FALSE": return JsonValue.Create(false);
        }
        if (long.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)) return JsonValue.Create(l);
        if (value.Length > 0 && (char.IsDigit(value[0]) || value[0] is '-' or '+' or '.')
            && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) return JsonValue.Create(d);
        if (value.StartsWith('[') || value.StartsWith('{'))
        {
            try { return ParseYamlFragment(value); } catch (PeftSharpException) { }
        }
        return JsonValue.Create(value);
    }

    private static JsonNode? ParseYamlFragment(string text)
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader("v: " + text)); }
        catch (YamlException e) { throw new PeftSharpException(e.Message); }
        return ((JsonObject)Convert(stream.Documents[0].RootNode)!)["v"]?.DeepClone();
    }

    private static JsonNode? Convert(YamlNode node) => node switch
    {
        YamlMappingNode map => ConvertMapping(map),
        YamlSequenceNode seq => new JsonArray(seq.Children.Select(Convert).ToArray()),
        YamlScalarNode s => ParseScalar(s.Value ?? "", s.Style is ScalarStyle.SingleQuoted or ScalarStyle.DoubleQuoted or ScalarStyle.Literal or ScalarStyle.Folded),
        _ => throw new PeftSharpException($"unsupported YAML node at line {node.Start.Line}."),
    };

    private static JsonObject ConvertMapping(YamlMappingNode map)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in map.Children)
        {
            var key = (k as YamlScalarNode)?.Value ?? throw new PeftSharpException($"line {k.Start.Line}: keys must be plain names.");
            if (obj.ContainsKey(key)) throw new PeftSharpException($"line {k.Start.Line}: key \"{key}\" appears twice.");
            obj[key] = Convert(v);
        }
        return obj;
    }
}
