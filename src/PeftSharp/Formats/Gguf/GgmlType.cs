namespace PeftSharp.Formats.Gguf;

/// <summary>ggml's tensor types (the numbers are ggml.h's <c>enum ggml_type</c>); the ones PeftSharp writes and reads.</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
}

/// <summary>Block sizes and byte sizes of <see cref="GgmlType"/>s (ggml.c's <c>type_traits</c>).</summary>
public static class GgmlTypes
{
    /// <summary>Elements per block and bytes per block, or null for a type number ggml does not define here.</summary>
    public static (int BlockSize, int BlockBytes)? Traits(GgmlType type) => type switch
    {
        GgmlType.F32 => (1, 4),
        GgmlType.F16 => (1, 2),
        GgmlType.BF16 => (1, 2),
        GgmlType.Q4_0 => (32, 2 + 16),
        GgmlType.Q4_1 => (32, 4 + 16),
        GgmlType.Q5_0 => (32, 2 + 4 + 16),
        GgmlType.Q5_1 => (32, 4 + 4 + 16),
        GgmlType.Q8_0 => (32, 2 + 32),
        GgmlType.Q8_1 => (32, 8 + 32),
        GgmlType.Q2_K => (256, 256 / 16 + 256 / 4 + 4),
        GgmlType.Q3_K => (256, 256 / 8 + 256 / 4 + 12 + 2),
        GgmlType.Q4_K => (256, 4 + 12 + 128),
        GgmlType.Q5_K => (256, 4 + 12 + 32 + 128),
        GgmlType.Q6_K => (256, 128 + 64 + 16 + 2),
        GgmlType.Q8_K => (256, 4 + 256 + 32),
        GgmlType.I8 => (1, 1),
        GgmlType.I16 => (1, 2),
        GgmlType.I32 => (1, 4),
        GgmlType.I64 => (1, 8),
        GgmlType.F64 => (1, 8),
        _ => null,
    };

    /// <summary>Bytes of <paramref name="rows"/> rows of <paramref name="rowLength"/> values; a row must be a whole number of blocks.</summary>
    public static long ByteSize(GgmlType type, long rowLength, long rows)
    {
        var (block, bytes) = Traits(type) ?? throw new PeftSharpException($"ggml type {(uint)type} is not known.");
        if (rowLength % block != 0) throw new PeftSharpException($"a {type} row holds blocks of {block} values; {rowLength} is not a multiple of {block}.");
        return checked(rowLength / block * bytes * rows);
    }

    /// <summary>The lower-case name llama.cpp prints ("f32", "q8_0", ...).</summary>
    public static string Name(GgmlType type) => Enum.IsDefined(type) ? type.ToString().ToLowerInvariant() : $"type {(uint)type}";
}
