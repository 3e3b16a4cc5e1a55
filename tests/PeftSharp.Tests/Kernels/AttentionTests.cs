using PeftSharp.Kernels;
using PeftSharp.Tensors;
using static PeftSharp.Tests.Kernels.GradCheck;

namespace PeftSharp.Tests.Kernels;

public unsafe class AttentionTests
{
    public static TheoryData<string, int, int, int, int, int> Cases => new()
    {
        { "mha", 2, 5, 2, 2, 4 },
        { "gqa", 1, 6, 4, 2, 3 },
        { "mqa-long", 1, 70, 2, 1, 2 }, // more keys than one key block
        { "padding", 2, 5, 2, 1, 4 },
        { "segments", 2, 6, 2, 2, 4 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardMatchesReferenceAndBackwardMatchesFiniteDifferences(string name, int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        var rng = new Rng((ulong)(name.Length * 10000 + tokens * 100 + heads * 10 + kvHeads));
        var q = RandomFloats(rng, batch * tokens * heads * headDim);
        var k = RandomFloats(rng, batch * tokens * kvHeads * headDim);
        var v = RandomFloats(rng, k.Length);
        var r = RandomFloats(rng, q.Length);
        int[]? mask = null, segments = null;
        if (name == "padding")
        {
            mask = new int[batch * tokens];
            for (int b = 0; b < batch; b++)
            for (int t = 0; t < tokens - 2 * b; t++) mask[b * tokens + t] = 1; // second sequence right-padded by 2
        }
        if (name == "segments") segments = [0, 0, 1, 1, 1, 2, 0, 0, 0, 0, 1, 1];
        var y = new float[q.Length];
        var lse = new float[batch * heads * tokens];
        var dq = new float[q.Length];
        var dk = new float[k.Length];
        var dv = new float[v.Length];
        fixed (float* pq = q, pk = k, pv = v, pr = r, py = y, pl = lse, pdq = dq, pdk = dk, pdv = dv)
        fixed (int* pm = mask, ps = segments)
        {
            Attention.Forward(pq, pk, pv, pm, ps, py, pl, batch, tokens, heads, kvHeads, headDim);
            Attention.Backward(pq, pk, pv, pm, ps, py, pl, pr, pdq, pdk, pdv, batch, tokens, heads, kvHeads, headDim);
        }
        double[] F(double[] qq, double[] kk, double[] vv) => KernelReference.Attention(qq, kk, vv, mask, segments, batch, tokens, heads, kvHeads, headDim);
        AssertClose(F(D(q), D(k), D(v)), y, 1e-5, "y");
        AssertClose(Numeric(x => F(x, D(k), D(v)), q, r), dq, 2e-4, "dq");
        AssertClose(Numeric(x => F(D(q), x, D(v)), k, r), dk, 2e-4, "dk");
        AssertClose(Numeric(x => F(D(q), D(k), x), v, r), dv, 2e-4, "dv");
    }

    [Fact]
    public void SegmentsBlockAttentionAcrossPackedExamples()
    {
        // Two packed examples: changing the first example's values must not move the second's outputs.
        int tokens = 6, d = 4;
        int[] segments = [0, 0, 0, 1, 1, 1];
        var rng = new Rng(11);
        var q = RandomFloats(rng, tokens * d);
        var k = RandomFloats(rng, tokens * d);
        var v = RandomFloats(rng, tokens * d);
        var y1 = Run(q, k, v, segments);
        for (int i = 0; i < 3 * d; i++) v[i] += 1f;
        var y2 = Run(q, k, v, segments);
        for (int i = 3 * d; i < tokens * d; i++) Assert.Equal(y1[i], y2[i]);
        Assert.NotEqual(y1[0], y2[0]);

        static float[] Run(float[] q, float[] k, float[] v, int[] segments)
        {
            var y = new float[q.Length];
            var lse = new float[segments.Length];
            fixed (float* pq = q, pk = k, pv = v, py = y, pl = lse)
            fixed (int* ps = segments)
                Attention.Forward(pq, pk, pv, null, ps, py, pl, 1, segments.Length, 1, 1, q.Length / segments.Length);
            return y;
        }
    }
}
