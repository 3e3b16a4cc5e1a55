namespace PeftSharp.Kernels;

/// <summary>
/// The NF4 and FP4 code tables and the value-to-code decision trees of bitsandbytes
/// (csrc/kernels.cu <c>nf4_dequantization_lut</c>, <c>dQuantizeNF4</c>, <c>dQuantizeFP4</c>; csrc/cpu_ops.cpp
/// <c>fp4_lut</c>). A code is a 4-bit index; the value is <c>table[code] · absmax</c>.
/// </summary>
public static class FourBitCodes
{
    /// <summary>NF4: quantiles of N(0, 1) normalised to [-1, 1] (QLoRA), indexed by code, ascending.</summary>
    public static ReadOnlySpan<float> Nf4 =>
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>
    /// FP4 (1 sign bit, 2 exponent bits, 1 mantissa bit, exponent bias 2, normalised by 12) as the kernels
    /// dequantize it: bit 3 is the sign, bits 0-2 select 0, 0.0625, 8, 12, 4, 6, 2, 3 (÷12). Code 8 is −0.
    /// </summary>
    public static ReadOnlySpan<float> Fp4 =>
    [
        0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
        -0.0f, -0.005208333333f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f,
    ];

    /// <summary>The dequantization table of <paramref name="type"/>.</summary>
    public static ReadOnlySpan<float> Table(QuantType type) => type == QuantType.Nf4 ? Nf4 : Fp4;

    /// <summary>
    /// The <c>quant_map</c> tensor bitsandbytes stores beside a 4-bit weight (<c>get_4bit_type</c>): the same
    /// values as <see cref="Table"/>, except that FP4's code 8 is +0 there (Python's <c>-0</c> is the integer 0).
    /// </summary>
    public static float[] QuantMap(QuantType type)
    {
        if (type == QuantType.Nf4) return Nf4.ToArray();
        float[] bitPatternValues = [0, 0.0625f, 8, 12, 4, 6, 2, 3, 0, -0.0625f, -8, -12, -4, -6, -2, -3];
        for (int i = 0; i < bitPatternValues.Length; i++) bitPatternValues[i] /= 12f;
        return bitPatternValues;
    }

    /// <summary>NF4 decision boundaries (midpoints of neighbouring codes, as in <c>dQuantizeNF4</c>), ascending.</summary>
    internal static ReadOnlySpan<float> Nf4Thresholds =>
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    /// <summary>FP4 magnitude boundaries of <c>dQuantizeFP4</c> (the kernel's literals, truncations included), ascending.</summary>
    internal static ReadOnlySpan<float> Fp4Thresholds =>
        [0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f];

    /// <summary>FP4 bit pattern (without sign) of the k-th smallest magnitude.</summary>
    internal static ReadOnlySpan<byte> Fp4MagnitudeCodes => [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

    /// <summary>
    /// The NF4 code of a value already divided by its block's absmax: the decision tree of <c>dQuantizeNF4</c>.
    /// A value exactly on a boundary takes the lower code (every test is <c>x &gt; boundary</c>); NaN gives code 0.
    /// </summary>
    public static byte QuantizeNf4(float x)
    {
        if (x > 0.03979014977812767f)
        {
            if (x > 0.3893125355243683f)
            {
                if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? (byte)0b1111 : (byte)0b1110;
                return x > 0.5016634166240692f ? (byte)0b1101 : (byte)0b1100;
            }
            if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? (byte)0b1011 : (byte)0b1010;
            return x > 0.1202552504837513f ? (byte)0b1001 : (byte)0b1000;
        }
        if (x > -0.33967943489551544f)
        {
            if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? (byte)0b0111 : (byte)0b0110;
            return x > -0.23460740596055984f ? (byte)0b0101 : (byte)0b0100;
        }
        if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? (byte)0b0011 : (byte)0b0010;
        return x > -0.8480964004993439f ? (byte)0b0001 : (byte)0b0000;
    }

    /// <summary>
    /// The FP4 code of a value already divided by its block's absmax: the decision tree of <c>dQuantizeFP4</c>
    /// on |x|, with the sign bit (8) set for x &lt; 0. Boundary values take the smaller magnitude.
    /// </summary>
    public static byte QuantizeFp4(float x)
    {
        int sign = x < 0 ? 0b1000 : 0;
        x = MathF.Abs(x);
        int code;
        if (x > 0.29166667f)
        {
            if (x > 0.583333f) code = x > 0.8333333f ? 0b011 : 0b010;
            else code = x > 0.4166667f ? 0b101 : 0b100;
        }
        else if (x > 0.0859375f) code = x > 0.20833333f ? 0b111 : 0b110;
        else code = x > 0.00260417f ? 0b001 : 0b000;
        return (byte)(code | sign);
    }

    public static byte Quantize(QuantType type, float normalized) =>
        type == QuantType.Nf4 ? QuantizeNf4(normalized) : QuantizeFp4(normalized);
}
