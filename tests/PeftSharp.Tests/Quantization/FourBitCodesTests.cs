using PeftSharp.Quantization;
using PeftSharp.Kernels;

namespace PeftSharp.Tests.Quantization;

public class FourBitCodesTests
{
    [Fact]
    public void Nf4TableIsBitsandbytesNormalFloat()
    {
        float[] expected =
        [
            -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
            -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
            0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
            0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
        ];
        Assert.Equal(expected, FourBitCodes.Nf4.ToArray());
        Assert.Equal(expected, FourBitCodes.QuantMap(QuantType.Nf4));
    }

    [Fact]
    public void Fp4TableIsSignExponentMantissaOverTwelve()
    {
        // bit 3 = sign; bits 0-2: 000=0, 001=0.0625 (subnormal), 010=8, 011=12, 100=4, 101=6, 110=2, 111=3; all / 12.
        float[] magnitudes = [0, 0.0625f, 8, 12, 4, 6, 2, 3];
        var table = FourBitCodes.Fp4;
        for (int code = 0; code < 16; code++)
        {
            float expected = magnitudes[code & 7] / 12f * ((code & 8) != 0 ? -1 : 1);
            Assert.Equal(expected, table[code]);
            Assert.Equal((code & 8) != 0, float.IsNegative(table[code]));
        }
        Assert.Equal(0.6666667f, table[2]);
        Assert.Equal(-0.25f, table[15]);
        var map = FourBitCodes.QuantMap(QuantType.Fp4);
        Assert.False(float.IsNegative(map[8])); // get_4bit_type's "-0" is Python's integer 0
        Assert.Equal(-0.005208333333f, map[9]);
    }

    [Theory]
    [InlineData(QuantType.Nf4)]
    [InlineData(QuantType.Fp4)]
    public void EveryCodeValueQuantizesToItself(QuantType type)
    {
        var table = FourBitCodes.Table(type);
        for (int code = 0; code < 16; code++)
        {
            byte got = FourBitCodes.Quantize(type, table[code]);
            Assert.Equal(table[code], table[got]); // FP4 +0 and -0 are the same value
        }
    }

    [Theory]
    [InlineData(QuantType.Nf4)]
    [InlineData(QuantType.Fp4)]
    public void DecisionTreeRoundsToNearestCodeAndTiesGoDown(QuantType type)
    {
        var table = FourBitCodes.Table(type).ToArray();
        var sorted = table.Distinct().Order().ToArray();
        var random = new Random(7);
        for (int i = 0; i < 20000; i++)
        {
            float x = (float)(random.NextDouble() * 2 - 1);
            float got = table[FourBitCodes.Quantize(type, x)];
            float best = sorted.MinBy(v => Math.Abs(v - x));
            Assert.True(Math.Abs(got - x) <= Math.Abs(best - x) + 1e-6f, $"{type}: {x} -> {got}, nearest is {best}");
        }
        // A value exactly on a kernel boundary takes the lower code ("x > boundary" picks the upper one).
        var boundaries = type == QuantType.Nf4 ? FourBitCodes.Nf4Thresholds.ToArray() : FourBitCodes.Fp4Thresholds.ToArray();
        foreach (float t in boundaries)
        {
            float below = table[FourBitCodes.Quantize(type, t)];
            float above = table[FourBitCodes.Quantize(type, MathF.BitIncrement(t))];
            Assert.True(below < above, $"{type}: boundary {t} gives {below}, just above gives {above}");
        }
        Assert.Equal(0.5f, FourBitCodes.Fp4[FourBitCodes.QuantizeFp4(0.583333f)]);
        Assert.Equal(0.6666667f, FourBitCodes.Fp4[FourBitCodes.QuantizeFp4(0.5833331f)]);
    }

    [Fact]
    public void Fp4SignBitFollowsInputSign()
    {
        Assert.Equal(0b1011, FourBitCodes.QuantizeFp4(-1f));
        Assert.Equal(0b0011, FourBitCodes.QuantizeFp4(1f));
        Assert.Equal(0b1000, FourBitCodes.QuantizeFp4(-0.001f));
        Assert.Equal(0b0000, FourBitCodes.QuantizeFp4(-0f));
        Assert.Equal(0b0111, FourBitCodes.QuantizeNf4(0f));
        Assert.Equal(0b0000, FourBitCodes.QuantizeNf4(-1f));
        Assert.Equal(0b1111, FourBitCodes.QuantizeNf4(1f));
    }
}
