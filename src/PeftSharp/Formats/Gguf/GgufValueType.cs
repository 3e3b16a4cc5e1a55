namespace PeftSharp.Formats.Gguf;

/// <summary>The type codes of GGUF metadata values (gguf.h's <c>enum gguf_type</c>).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>
/// One metadata value: a scalar, a string, or an array of one element type. <see cref="Value"/> holds the
/// .NET value (byte, sbyte, ushort, short, uint, int, float, bool, string, ulong, long, double) or, for an
/// array, a .NET array of those (string[], float[], int[], ...).
/// </summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue Of(string value) => new(GgufValueType.String, value);
    public static GgufValue Of(uint value) => new(GgufValueType.UInt32, value);
    public static GgufValue Of(int value) => new(GgufValueType.Int32, value);
    public static GgufValue Of(float value) => new(GgufValueType.Float32, value);
    public static GgufValue Of(bool value) => new(GgufValueType.Bool, value);
    public static GgufValue Of(ulong value) => new(GgufValueType.UInt64, value);
    public static GgufValue Array(string[] values) => new(GgufValueType.Array, values, GgufValueType.String);
    public static GgufValue Array(float[] values) => new(GgufValueType.Array, values, GgufValueType.Float32);
    public static GgufValue Array(int[] values) => new(GgufValueType.Array, values, GgufValueType.Int32);

    /// <summary>The value as a string, for display: arrays show their element type and length and their first elements.</summary>
    public override string ToString()
    {
        if (Type != GgufValueType.Array) return Format(Value);
        var array = (System.Array)Value;
        var shown = array.Cast<object>().Take(8).Select(Format);
        return $"[{ElementType.ToString().ToLowerInvariant()} x {array.Length}] [{string.Join(", ", shown)}{(array.Length > 8 ? ", ..." : "")}]";
    }

    private static readonly System.Text.Json.JsonSerializerOptions DisplayJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static string Format(object value) => value switch
    {
        string s => System.Text.Json.JsonSerializer.Serialize(s.Length > 200 ? s[..200] + "..." : s, DisplayJson),
        bool b => b ? "true" : "false",
        float f => f.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
