using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Config;

/// <summary>Typed reads from a validated config section, falling back to a default when absent or null.</summary>
public static class JsonRead
{
    public static string? Str(this JsonObject o, string key, string? fallback = null) =>
        o[key] is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : fallback;

    public static double Num(this JsonObject o, string key, double fallback) => KeySpec.AsNumber(o[key]) ?? fallback;

    public static double? NumOrNull(this JsonObject o, string key) => KeySpec.AsNumber(o[key]);

    public static int Int(this JsonObject o, string key, int fallback) => KeySpec.AsNumber(o[key]) is { } d ? (int)d : fallback;

    public static int? IntOrNull(this JsonObject o, string key) => KeySpec.AsNumber(o[key]) is { } d ? (int)d : null;

    public static bool Bool(this JsonObject o, string key, bool fallback) =>
        o[key] is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? v.GetValue<bool>() : fallback;

    public static bool? BoolOrNull(this JsonObject o, string key) =>
        o[key] is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? v.GetValue<bool>() : null;
}
