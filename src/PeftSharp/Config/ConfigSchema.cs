using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace PeftSharp.Config;

/// <summary>What a config value may be.</summary>
public enum ValueKind { Int, Number, Bool, String, Enum, StringList, StringOrStringList, IntOrIntList, Dict, IntOrFraction, BoolOrString, NumberList }

/// <summary>One key of a config section: its type, allowed range or values, and a one-line help.</summary>
public sealed record KeySpec(string Name, ValueKind Kind, string Help, double? Min = null, double? Max = null,
    bool MinExclusive = false, bool MaxExclusive = false, IReadOnlyList<string>? Allowed = null, bool Nullable = true)
{
    /// <summary>Checks a value; returns null when it fits, else what was expected.</summary>
    public string? Check(JsonNode? value)
    {
        if (value == null) return Nullable ? null : "a value (not null)";
        switch (Kind)
        {
            case ValueKind.Bool:
                return value.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? null : "true or false";
            case ValueKind.String:
                return value.GetValueKind() == JsonValueKind.String ? null : "a string";
            case ValueKind.Enum:
                return value.GetValueKind() == JsonValueKind.String && Allowed!.Contains(value.GetValue<string>())
                    ? null : "one of " + string.Join(", ", Allowed!.Select(a => $"\"{a}\""));
            case ValueKind.Int:
                return AsNumber(value) is { } i && i == Math.Floor(i) ? RangeError(i, "an integer") : "an integer" + RangeText();
            case ValueKind.Number:
                return AsNumber(value) is { } n ? RangeError(n, "a number") : "a number" + RangeText();
            case ValueKind.IntOrFraction:
                return AsNumber(value) is { } f && f >= 0 && (f < 1 || f == Math.Floor(f)) ? null : "a whole number of steps, or a fraction in [0, 1) of the total";
            case ValueKind.StringList:
                return value is JsonArray a && a.All(x => x?.GetValueKind() == JsonValueKind.String) ? null : "a list of strings";
            case ValueKind.StringOrStringList:
                return value.GetValueKind() == JsonValueKind.String || value is JsonArray sa && sa.All(x => x?.GetValueKind() == JsonValueKind.String)
                    ? null : "a string or a list of strings";
            case ValueKind.IntOrIntList:
                return AsNumber(value) is { } one && one == Math.Floor(one) || value is JsonArray ia && ia.All(x => AsNumber(x) is { } v && v == Math.Floor(v))
                    ? null : "an integer or a list of integers";
            case ValueKind.NumberList:
                return value is JsonArray na && na.All(x => AsNumber(x) != null) ? null : "a list of numbers";
            case ValueKind.BoolOrString:
                return value.GetValueKind() is JsonValueKind.True or JsonValueKind.False or JsonValueKind.String ? null : "true, false or a string";
            case ValueKind.Dict:
                return value is JsonObject ? null : "a mapping";
        }
        return null;
    }

    private string? RangeError(double v, string what)
    {
        bool low = Min is { } min && (MinExclusive ? v <= min : v < min);
        bool high = Max is { } max && (MaxExclusive ? v >= max : v > max);
        return low || high ? what + RangeText() : null;
    }

    private string RangeText()
    {
        if (Min == null && Max == null) return "";
        string lo = Min is { } a ? (MinExclusive ? "(" : "[") + Fmt(a) : "(-inf";
        string hi = Max is { } b ? Fmt(b) + (MaxExclusive ? ")" : "]") : "inf)";
        return $" in {lo}, {hi}";
    }

    private static string Fmt(double d) => d.ToString(CultureInfo.InvariantCulture);

    public static double? AsNumber(JsonNode? node)
    {
        if (node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number) return null;
        if (v.TryGetValue(out double d)) return d;
        if (v.TryGetValue(out long l)) return l;
        if (v.TryGetValue(out int i)) return i;
        if (v.TryGetValue(out float f)) return f;
        if (v.TryGetValue(out decimal m)) return (double)m;
        return null;
    }
}

/// <summary>A section of the config file and its keys.</summary>
public sealed class SectionSpec(string name, string help, IEnumerable<KeySpec> keys)
{
    public string Name { get; } = name;
    public string Help { get; } = help;
    public IReadOnlyDictionary<string, KeySpec> Keys { get; } = keys.ToDictionary(k => k.Name);
}
