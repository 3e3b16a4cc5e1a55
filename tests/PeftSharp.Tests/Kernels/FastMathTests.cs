using System.Runtime.Intrinsics;
using PeftSharp.Kernels;

namespace PeftSharp.Tests.Kernels;

public class FastMathTests
{
    [Fact]
    public void ExpIsWithinAFewUlpAcrossTheRangeAndHandlesTheEdges()
    {
        if (!Vector512.IsHardwareAccelerated) return;
        var xs = new List<float>();
        for (float x = -87f; x <= 87f; x += 0.0137f) xs.Add(x);
        xs.AddRange([0f, -0f, 1e-8f, -1e-8f, 0.34657359f, -0.34657359f]);
        while (xs.Count % 16 != 0) xs.Add(1f);
        var values = xs.ToArray();
        double worst = 0;
        for (int i = 0; i < values.Length; i += 16)
        {
            var e = FastMath.Exp(Vector512.Create(values.AsSpan(i, 16)));
            for (int l = 0; l < 16; l++)
            {
                double want = Math.Exp(values[i + l]);
                worst = Math.Max(worst, Math.Abs(e[l] - want) / want);
            }
        }
        Assert.True(worst < 3e-7, $"worst relative error {worst}");

        var edges = FastMath.Exp(Vector512.Create([float.NegativeInfinity, -88f, -1000f, float.NaN, 88f, 1000f, float.PositiveInfinity, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f]));
        Assert.Equal(0f, edges[0]);
        Assert.Equal(0f, edges[1]);
        Assert.Equal(0f, edges[2]);
        Assert.True(float.IsNaN(edges[3]));
        Assert.True(float.IsFinite(edges[4]) && edges[4] > 1e38f);
        Assert.Equal(edges[4], edges[5]);
        Assert.Equal(edges[4], edges[6]);
        Assert.Equal(1f, edges[7]);
    }
}
