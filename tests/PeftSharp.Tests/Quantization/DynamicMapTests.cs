using PeftSharp.Quantization;

namespace PeftSharp.Tests.Quantization;

public class DynamicMapTests
{
    [Fact]
    public void SignedMapHas256AscendingValuesFromAboutMinusOneToOne()
    {
        var map = DynamicMap.Signed;
        Assert.Equal(256, map.Length);
        for (int i = 1; i < 256; i++) Assert.True(map[i] > map[i - 1], $"entry {i} ({map[i]}) is not above entry {i - 1} ({map[i - 1]})");
        Assert.Equal(1f, map[255]);
        Assert.Equal(0f, map[127]);
        // Entries of bitsandbytes' create_dynamic_map(signed=True) as PyTorch prints them (to within an ulp of its linspace).
        AssertClose(-0.992968738079071f, map[0]);
        AssertClose(0.992968738079071f, map[254]);
        AssertClose(5.5e-7f, map[128]);
        AssertClose(-5.5e-7f, map[126]);
        AssertClose(0.10703125596046448f, map[191]);
        AssertClose(0.09859374910593033f, map[190]);
        AssertClose(0.0012812500353902578f, map[143]);
        AssertClose(0.54296875f, map[222]);
        // 2^i fractions per decimal exponent i = 0..6, both signs, plus 0 and 1.
        Assert.Equal(64, map.ToArray().Count(v => v >= 0.1f && v < 1f));
        Assert.Equal(32, map.ToArray().Count(v => v >= 0.01f && v < 0.1f));
        Assert.Equal(1, map.ToArray().Count(v => v > 0f && v < 1e-6f));
    }

    [Fact]
    public void SignedMapIsBitExactWithPyTorchsEvaluation()
    {
        string path = Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "quant", "dynamic_map_signed.json");
        var golden = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path)).RootElement.GetProperty("float32_bits")
            .EnumerateArray().Select(e => e.GetUInt32()).ToArray();
        var ours = DynamicMap.Create().Select(BitConverter.SingleToUInt32Bits).ToArray();
        Assert.Equal(256, golden.Length);
        var differing = Enumerable.Range(0, 256).Where(i => golden[i] != ours[i]).ToArray();
        Assert.True(differing.Length == 0, $"{differing.Length} entries differ, first at {differing.FirstOrDefault()}: "
            + $"{BitConverter.UInt32BitsToSingle(golden[differing.FirstOrDefault()]):R} expected");
    }

    private static void AssertClose(float expected, float actual) =>
        Assert.True(Math.Abs(expected - actual) <= 2e-7 * Math.Abs(expected), $"expected {expected:R}, got {actual:R}");

    [Fact]
    public void QuantizeValuePicksTheNearestEntry()
    {
        var map = DynamicMap.Signed;
        var random = new Random(3);
        for (int i = 0; i < 5000; i++)
        {
            float x = (float)(random.NextDouble() * 2 - 1) * (i % 2 == 0 ? 1f : 0.01f);
            float got = map[DynamicMap.QuantizeValue(map, x)];
            float best = map.ToArray().MinBy(v => Math.Abs(v - x));
            Assert.True(Math.Abs(got - x) <= Math.Abs(best - x), $"{x} -> {got}, nearest {best}");
        }
        for (int code = 0; code < 256; code++) Assert.Equal(code, DynamicMap.QuantizeValue(map, map[code]));
    }

    [Fact]
    public void BlockwiseRoundTripErrorIsWithinHalfTheLargestGap()
    {
        var values = Gaussian.Sample(1000, 11, 0.02f);
        var map = DynamicMap.Signed;
        var codes = new byte[values.Length];
        var absmax = new float[4];
        DynamicMap.QuantizeBlockwise(values, 256, map, codes, absmax);
        var restored = new float[values.Length];
        DynamicMap.DequantizeBlockwise(codes, absmax, 256, map, restored);
        for (int i = 0; i < values.Length; i++)
        {
            float a = absmax[i / 256];
            Assert.True(Math.Abs(values[i] - restored[i]) <= a * 0.0071f, $"element {i}: {values[i]} -> {restored[i]} (absmax {a})");
        }
        Assert.Equal(values.Take(256).Max(Math.Abs), absmax[0]);
        Assert.Equal(values.Skip(768).Max(Math.Abs), absmax[3]);
    }
}
