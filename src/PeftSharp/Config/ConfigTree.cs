using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace PeftSharp.Config;

/// <summary>Reads a YAML or JSON config file into a JSON tree, with YAML's scalar typing (true, null, 1e-4, ...).</summary>
public static class ConfigTree
{
    /// <summary>Nesting of YAML mappings and sequences (a run config nests 3 levels).</summary>
    public const int MaxYamlDepth = 64;

    /// <summary>Nodes after expanding aliases (a run config has a few hundred); a "billion laughs" file stops here.</summary>
    public const int MaxYamlNodes = 100_000;

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
        Formats.JsonInput.ParseNode(text, "", allowTrailingCommas: true, allowComments: true) as JsonObject
            ?? throw new PeftSharpException("the top level must be an object of sections (model, lora, quantization, data, training).");

    public static JsonObject ParseYaml(string text)
    {
        var stream = new YamlStream();
        try
        {
            CheckYamlDepth(text);
            stream.Load(new StringReader(text));
        }
        catch (YamlException e) { throw new PeftSharpException($"malformed YAML at line {e.Start.Line}, column {e.Start.Column}: {e.InnerException?.Message ?? e.Message}"); }
        catch (InvalidOperationException e) { throw new PeftSharpException($"malformed YAML (an unclosed bracket or quote?): {e.Message}"); }
        if (stream.Documents.Count == 0) return [];
        return Convert(stream.Documents[0].RootNode, new YamlBudget()) as JsonObject
            ?? throw new PeftSharpException("the top level must be a mapping of sections (model, lora, quantization, data, training).");
    }

    /// <summary>
    /// One pass over the parser's events (which is not recursive) before the node tree is built (which
    /// is): nesting past <see cref="MaxYamlDepth"/> would overflow the stack while loading.
    /// </summary>
    private static void CheckYamlDepth(string text)
    {
        var parser = new Parser(new StringReader(text));
        int depth = 0;
        while (parser.MoveNext())
        {
            switch (parser.Current)
            {
                case YamlDotNet.Core.Events.MappingStart or YamlDotNet.Core.Events.SequenceStart:
                    if (++depth > MaxYamlDepth)
                        throw new PeftSharpException($"line {parser.Current!.Start.Line}: YAML nested deeper than the limit of {MaxYamlDepth} levels.");
                    break;
                case YamlDotNet.Core.Events.MappingEnd or YamlDotNet.Core.Events.SequenceEnd:
                    depth--;
                    break;
            }
        }
    }

    /// <summary>Counts nodes as aliases are expanded, and the nesting of the expansion (an alias inside its own anchor nests forever).</summary>
    private sealed class YamlBudget
    {
        public int Nodes;
        public int Depth;
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
            && double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d))
            return double.IsFinite(d) ? JsonValue.Create(d) : throw new PeftSharpException($"the number {value} is out of range (beyond a 64-bit float).");
        if (value.StartsWith('[') || value.StartsWith('{'))
        {
            try { return ParseYamlFragment(value); } catch (PeftSharpException) { }
        }
        return JsonValue.Create(value);
    }

    private static JsonNode? ParseYamlFragment(string text)
    {
        var stream = new YamlStream();
        try
        {
            CheckYamlDepth("v: " + text);
            stream.Load(new StringReader("v: " + text));
        }
        catch (YamlException e) { throw new PeftSharpException(e.Message); }
        return ((JsonObject)Convert(stream.Documents[0].RootNode, new YamlBudget())!)["v"]?.DeepClone();
    }

    private static JsonNode? Convert(YamlNode node, YamlBudget budget)
    {
        if (++budget.Nodes > MaxYamlNodes)
            throw new PeftSharpException($"line {node.Start.Line}: YAML aliases expand past the limit of {MaxYamlNodes:N0} values (an alias repeated inside aliases?).");
        if (++budget.Depth > MaxYamlDepth)
            throw new PeftSharpException($"line {node.Start.Line}: YAML nested deeper than the limit of {MaxYamlDepth} levels (an alias inside its own anchor?).");
        try
        {
            return node switch
            {
                YamlMappingNode map => ConvertMapping(map, budget),
                YamlSequenceNode seq => new JsonArray(seq.Children.Select(c => Convert(c, budget)).ToArray()),
                YamlScalarNode s => ScalarAt(s),
                _ => throw new PeftSharpException($"unsupported YAML node at line {node.Start.Line}."),
            };
        }
        finally { budget.Depth--; }
    }

    private static JsonNode? ScalarAt(YamlScalarNode s)
    {
        try { return ParseScalar(s.Value ?? "", s.Style is ScalarStyle.SingleQuoted or ScalarStyle.DoubleQuoted or ScalarStyle.Literal or ScalarStyle.Folded); }
        catch (PeftSharpException e) { throw new PeftSharpException($"line {s.Start.Line}: {e.Message}"); }
    }

    private static JsonObject ConvertMapping(YamlMappingNode map, YamlBudget budget)
    {
        var obj = new JsonObject();
        foreach (var (k, v) in map.Children)
        {
            var key = (k as YamlScalarNode)?.Value ?? throw new PeftSharpException($"line {k.Start.Line}: keys must be plain names.");
            if (obj.ContainsKey(key)) throw new PeftSharpException($"line {k.Start.Line}: key \"{key}\" appears twice.");
            obj[key] = Convert(v, budget);
        }
        return obj;
    }
}
