namespace PeftSharp.Kernels;

/// <summary>The 4-bit data types of bitsandbytes (<c>bnb_4bit_quant_type</c>).</summary>
public enum QuantType { Nf4, Fp4 }

public static class QuantTypeNames
{
    /// <summary>The name bitsandbytes and transformers use: "nf4" or "fp4".</summary>
    public static string BnbName(this QuantType type) => type == QuantType.Nf4 ? "nf4" : "fp4";

    /// <summary>Parses "nf4" or "fp4"; <paramref name="key"/> names the config key or file entry for the error.</summary>
    public static QuantType Parse(string? name, string key) => name switch
    {
        "nf4" => QuantType.Nf4,
        "fp4" => QuantType.Fp4,
        _ => throw new PeftSharpException($"{key}: expected \"nf4\" or \"fp4\", got {(name is null ? "null" : $"\"{name}\"")}."),
    };
}
