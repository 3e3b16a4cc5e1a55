namespace PeftSharp.Tests.Quantization;

/// <summary>Seeded N(mean, std) samples (Box-Muller) for the quantization tests.</summary>
internal static class Gaussian
{
    public static float[] Sample(int count, int seed, float std = 1f)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i += 2)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            double r = Math.Sqrt(-2 * Math.Log(u1));
            values[i] = (float)(std * r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < count) values[i + 1] = (float)(std * r * Math.Sin(2 * Math.PI * u2));
        }
        return values;
    }
}
