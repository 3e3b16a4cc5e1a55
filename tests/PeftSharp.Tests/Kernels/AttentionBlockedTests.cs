using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Kernels;

/// <summary>The blocked Vector512 attention against the per-key path (forced Vector256) on sizes that cross blocks unevenly.</summary>
[Collection(PeftSharp.Tests.Kernels.SimdForcingCollection.Name)]
public unsafe class AttentionBlockedTests
{
    public static TheoryData<string, int, int, int, int, int> Cases => new()
    {
        { "mha-d64", 2, 130, 3, 3, 64 },
        { "gqa-d40", 1, 150, 4, 2, 40 },
        { "d128-short", 1, 17, 2, 1, 128 },
        { "padding-d24", 2, 97, 2, 1, 24 },
        { "segments-d72", 2, 140, 2, 2, 72 },
        { "left-padding-d16", 2, 70, 2, 2, 16 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void BlockedMatchesPerKey(string name, int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        if (Simd.Best != SimdPath.Vector512) return; // the blocked path only exists on Vector512 hardware
        var rng = new Rng((ulong)(tokens * 131 + headDim));
        float[] q = Random(rng, batch * tokens * heads * headDim), k = Random(rng, batch * tokens * kvHeads * headDim);
        float[] v = Random(rng, k.Length), dOut = Random(rng, q.Length);
        int[]? mask = null, segments = null;
        if (name.StartsWith("padding", StringComparison.Ordinal) || name.StartsWith("left", StringComparison.Ordinal))
        {
            mask = new int[batch * tokens];
            bool left = name.StartsWith("left", StringComparison.Ordinal);
            for (int b = 0; b < batch; b++)
                for (int t = 0; t < tokens; t++)
                    mask[b * tokens + t] = left ? (t >= 5 + 60 * b ? 1 : 0) : (t < tokens - 33 * b ? 1 : 0);
        }
        if (name.StartsWith("segments", StringComparison.Ordinal))
        {
            segments = new int[batch * tokens];
            for (int i = 0; i < segments.Length; i++) segments[i] = (i % tokens) / 45 + (i / tokens) * 7;
        }
        var blocked = Run(SimdPath.Vector512);
        var perKey = Run(SimdPath.Vector256);
        for (int i = 0; i < blocked.Length; i++)
            for (int e = 0; e < blocked[i].Length; e++)
            {
                float want = perKey[i][e], got = blocked[i][e];
                if (float.IsNegativeInfinity(want)) Assert.True(float.IsNegativeInfinity(got), $"{name}: output {i}[{e}] = {got}, expected -inf");
                else Assert.True(Math.Abs(got - want) <= 2e-5 + 2e-5 * Math.Abs(want), $"{name}: output {i}[{e}] = {got}, expected {want}");
            }

        float[][] Run(SimdPath path)
        {
            using var forced = Simd.Force(path);
            var y = new float[q.Length];
            var lse = new float[batch * heads * tokens];
            var dq = new float[q.Length];
            var dk = new float[k.Length];
            var dv = new float[v.Length];
            Array.Fill(dq, 0.5f); // backward accumulates
            fixed (float* pq = q, pk = k, pv = v, pd = dOut, py = y, pl = lse, pdq = dq, pdk = dk, pdv = dv)
            fixed (int* pm = mask, ps = segments)
            {
                Attention.Forward(pq, pk, pv, pm, ps, py, pl, batch, tokens, heads, kvHeads, headDim);
                Attention.Backward(pq, pk, pv, pm, ps, py, pl, pd, pdq, pdk, pdv, batch, tokens, heads, kvHeads, headDim);
            }
            return [y, lse, dq, dk, dv];
        }
    }

    [Fact]
    public void BackwardSkipsGradientsNobodyNeeds()
    {
        int tokens = 80, d = 32;
        var rng = new Rng(5);
        float[] q = Random(rng, tokens * d), k = Random(rng, tokens * d), v = Random(rng, tokens * d), dOut = Random(rng, tokens * d);
        var y = new float[q.Length];
        var lse = new float[tokens];
        float[] dvAll = new float[v.Length], dvOnly = new float[v.Length], dqAll = new float[q.Length], dkAll = new float[k.Length];
        fixed (float* pq = q, pk = k, pv = v, pd = dOut, py = y, pl = lse, pdvA = dvAll, pdvO = dvOnly, pdqA = dqAll, pdkA = dkAll)
        {
            Attention.Forward(pq, pk, pv, null, null, py, pl, 1, tokens, 1, 1, d);
            Attention.Backward(pq, pk, pv, null, null, py, pl, pd, pdqA, pdkA, pdvA, 1, tokens, 1, 1, d);
            Attention.Backward(pq, pk, pv, null, null, py, pl, pd, null, null, pdvO, 1, tokens, 1, 1, d);
        }
        Assert.Equal(dvAll, dvOnly);
        Assert.Contains(dqAll, x => x != 0f);
    }

    private static float[] Random(Rng rng, int n)
    {
        var a = new float[n];
        rng.FillNormal(a, 0f, 1f);
        return a;
    }
}
