using PeftSharp.Tensors;

namespace PeftSharp.Tests.Kernels;

/// <summary>Central differences in double of a reference forward, against an f32 analytical gradient.</summary>
internal static class GradCheck
{
    public static float[] RandomFloats(Rng rng, int n, float scale = 1f)
    {
        var a = new float[n];
        rng.FillNormal(a, 0f, scale);
        return a;
    }

    public static double[] D(float[] a) => a.Select(v => (double)v).ToArray();

    /// <summary>∂/∂x of L(x) = Σ r·f(x), by central differences.</summary>
    public static double[] Numeric(Func<double[], double[]> f, float[] x, float[] r, double h = 1e-6)
    {
        var xd = D(x);
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double saved = xd[i];
            xd[i] = saved + h;
            double plus = Dot(f(xd), r);
            xd[i] = saved - h;
            double minus = Dot(f(xd), r);
            xd[i] = saved;
            g[i] = (plus - minus) / (2 * h);
        }
        return g;
    }

    /// <summary>∂/∂x of a scalar function.</summary>
    public static double[] NumericScalar(Func<double[], double> f, float[] x, double h = 1e-6)
        => Numeric(v => [f(v)], x, [1f], h);

    public static double Dot(double[] y, float[] r)
    {
        double s = 0;
        for (int i = 0; i < y.Length; i++) s += y[i] * r[i];
        return s;
    }

    public static void AssertClose(double[] expected, float[] actual, double tolerance, string what = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = Math.Max(1e-3, expected.Max(Math.Abs));
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(expected[i] - actual[i]);
            Assert.True(error <= tolerance * scale, $"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R} (|error| {error:E2} > {tolerance:E1}·{scale:G3})");
        }
    }
}
