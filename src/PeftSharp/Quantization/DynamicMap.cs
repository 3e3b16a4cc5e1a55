using System.Globalization;

namespace PeftSharp.Quantization;

/// <summary>
/// bitsandbytes' 8-bit dynamic data type (<c>create_dynamic_map</c>) and its blockwise quantizer, which
/// double quantization uses for the absmax values. Quantizing follows the CUDA kernel's <c>dQuantize</c>
/// (a 7-step binary search, then the nearer neighbour by midpoint).
/// </summary>
public static class DynamicMap
{
    private static readonly float[] SignedMap = Create();

    /// <summary><c>create_dynamic_map(signed=True)</c>: 256 ascending values from about −0.99297 to 1.</summary>
    public static ReadOnlySpan<float> Signed => SignedMap;

    /// <summary>
    /// <c>create_dynamic_map(signed, max_exponent_bits, total_bits)</c> in float32 as PyTorch computes it:
    /// for each decimal exponent i, the means of neighbouring points of <c>linspace(0.1, 1, 2^i + 1)</c> scaled by
    /// 10^(i − 6), both signs, plus 0 and 1, sorted, with the linspace evaluated as PyTorch's CPU kernel does. Another
    /// PyTorch build (another vector width) can differ by an ulp in some entries, which is why loading a checkpoint
    /// uses the map stored in it (<c>nested_quant_map</c>) rather than this one.
    /// </summary>
    public static float[] Create(bool signed = true, int maxExponentBits = 7, int totalBits = 8)
    {
        int nonSignBits = totalBits - 1;
        int additionalItems = (1 << (nonSignBits - maxExponentBits)) - 1;
        var data = new List<float>(256);
        for (int i = 0; i < maxExponentBits; i++)
        {
            int fractionItems = signed
                ? (1 << (i + nonSignBits - maxExponentBits)) + 1
                : (1 << (i + nonSignBits - maxExponentBits + 1)) + 1;
            AddMeans(data, fractionItems, PowerOfTen(-(maxExponentBits - 1) + i), signed);
        }
        if (additionalItems > 0)
            AddMeans(data, additionalItems + 1, PowerOfTen(-(maxExponentBits - 1) + maxExponentBits - 1), signed);
        data.Add(0f);
        data.Add(1f);
        if (data.Count != 1 << totalBits)
            throw new ArgumentException($"create_dynamic_map({signed}, {maxExponentBits}, {totalBits}) gives {data.Count} values, not {1 << totalBits}.");
        while (data.Count < 256) data.Add(0f);
        data.Sort();
        return data.ToArray();
    }

    private static float PowerOfTen(int exponent) =>
        (float)double.Parse("1e" + exponent.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    private static void AddMeans(List<float> data, int points, float scale, bool signed)
    {
        var boundaries = Linspace(0.1f, 1f, points);
        for (int j = 0; j + 1 < points; j++)
        {
            float mean = (boundaries[j] + boundaries[j + 1]) / 2f;
            float value = scale * mean;
            data.Add(value);
            if (signed) data.Add(-value);
        }
    }

    /// <summary>
    /// torch.linspace in float32 as PyTorch's CPU kernel evaluates it (ATen's linspace_kernel, AVX2 build): elements are
    /// produced in pairs of 8-wide vectors while 16 or more remain, each vector as base + j·step from a base computed like
    /// a scalar element, and the rest one by one; a scalar element is start + step·i (from the end, end − step·(n − 1 − i),
    /// for the second half), which the compiler contracts to one fused multiply-add. Bit-exact with torch 1.13's output
    /// (tests/PeftSharp.Tests/Golden/quant/make_dynamic_map.py).
    /// </summary>
    private static float[] Linspace(float start, float end, int steps)
    {
        var values = new float[steps];
        if (steps == 1) { values[0] = start; return values; }
        float step = (end - start) / (steps - 1);
        int halfway = steps / 2;
        float Scalar(int i) => i < halfway ? MathF.FusedMultiplyAdd(step, i, start) : MathF.FusedMultiplyAdd(-step, steps - i - 1, end);
        const int vector = 8;
        int at = 0;
        for (; at <= steps - 2 * vector; at += 2 * vector)
            for (int v = at; v < at + 2 * vector; v += vector)
            {
                float baseValue = Scalar(v);
                for (int j = 0; j < vector; j++) values[v + j] = baseValue + j * step;
            }
        for (; at < steps; at++) values[at] = Scalar(at);
        return values;
    }

    /// <summary>The code of <paramref name="x"/> (already divided by its block absmax) in a sorted 256-entry map, as CUDA <c>dQuantize</c> picks it.</summary>
    public static byte QuantizeValue(ReadOnlySpan<float> code, float x)
    {
        int pivot = 127, upperPivot = 255, lowerPivot = 0;
        float lower = -1f, upper = 1f;
        float value = code[pivot];
        for (int step = 64; step > 0; step >>= 1)
        {
            if (x > value) { lowerPivot = pivot; lower = value; pivot += step; }
            else { upperPivot = pivot; upper = value; pivot -= step; }
            value = code[pivot];
        }
        if (upperPivot == 255) upper = code[upperPivot];
        if (lowerPivot == 0) lower = code[lowerPivot];
        if (x > value) return (byte)(x > (upper + value) * 0.5f ? upperPivot : pivot);
        return (byte)(x < (lower + value) * 0.5f ? lowerPivot : pivot);
    }

    /// <summary>
    /// Blockwise 8-bit quantization (<c>quantize_blockwise</c>): per block of <paramref name="blockSize"/> values,
    /// absmax = max |v|, code = nearest map entry to v · (1 / absmax). An all-zero block gets absmax 0 and the code of 0.
    /// </summary>
    public static void QuantizeBlockwise(ReadOnlySpan<float> values, int blockSize, ReadOnlySpan<float> code, Span<byte> codes, Span<float> absmax)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        int blocks = (values.Length + blockSize - 1) / blockSize;
        if (codes.Length < values.Length || absmax.Length < blocks)
            throw new ArgumentException($"Need {values.Length} codes and {blocks} absmax slots.");
        for (int b = 0; b < blocks; b++)
        {
            var block = values.Slice(b * blockSize, Math.Min(blockSize, values.Length - b * blockSize));
            float max = 0f;
            foreach (float v in block) max = MathF.Max(max, MathF.Abs(v));
            absmax[b] = max;
            float inverse = 1f / MathF.Max(max, 1e-38f);
            for (int i = 0; i < block.Length; i++)
                codes[b * blockSize + i] = QuantizeValue(code, Math.Clamp(block[i] * inverse, -1f, 1f));
        }
    }

    /// <summary><c>dequantize_blockwise</c>: value = code[q] · absmax[block].</summary>
    public static void DequantizeBlockwise(ReadOnlySpan<byte> codes, ReadOnlySpan<float> absmax, int blockSize, ReadOnlySpan<float> code, Span<float> values)
    {
        for (int i = 0; i < codes.Length; i++) values[i] = code[codes[i]] * absmax[i / blockSize];
    }
}
