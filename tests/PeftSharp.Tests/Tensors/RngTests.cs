using PeftSharp.Tensors;

namespace PeftSharp.Tests.Tensors;

public class RngTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(1000)]
    public void SkipIsThatManyDraws(long draws)
    {
        var drawn = new Rng(42);
        for (long i = 0; i < draws; i++) drawn.NextUInt64();
        var skipped = new Rng(42);
        skipped.Skip(draws);
        Assert.Equal(drawn.State, skipped.State);
        Assert.Equal(drawn.NextUInt64(), skipped.NextUInt64());
    }

    // The vectorized Box-Muller against the scalar formula in double: the same draws, values within one float ulp (the vector
    // log/sincos may differ in the double's last bit), lengths that end mid-group and an odd last element (cosine only).
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(4099)]
    public void FillNormalIsBoxMullerPairByPair(int length)
    {
        var values = new float[length];
        var rng = new Rng(7);
        rng.FillNormal(values, 0.5f, 0.02f);
        var reference = new Rng(7);
        for (int i = 0; i < length; i += 2)
        {
            double u1 = 1.0 - reference.NextDouble(), u2 = reference.NextDouble();
            double radius = Math.Sqrt(-2.0 * Math.Log(u1)), angle = 2.0 * Math.PI * u2;
            AssertUlp(0.5f + 0.02f * (float)(radius * Math.Cos(angle)), values[i]);
            if (i + 1 < length) AssertUlp(0.5f + 0.02f * (float)(radius * Math.Sin(angle)), values[i + 1]);
        }
        Assert.Equal(reference.State, rng.State);
    }

    private static void AssertUlp(float expected, float actual) =>
        Assert.True(Math.Abs(expected - actual) <= MathF.BitIncrement(MathF.Abs(expected)) - MathF.Abs(expected), $"{actual} vs {expected}");
}
