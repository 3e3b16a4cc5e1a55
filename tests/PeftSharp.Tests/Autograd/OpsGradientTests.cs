using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Tensors;
using static PeftSharp.Tests.Kernels.GradCheck;

namespace PeftSharp.Tests.Autograd;

/// <summary>
/// Each op through the tape: loss = Σ r·op(inputs) is built from ops (a frozen 1-row Linear holds r),
/// and every input's gradient is compared with central differences of the double reference.
/// </summary>
public unsafe class OpsGradientTests
{
    private const double Tolerance = 2e-4;

    private sealed class Harness : IDisposable
    {
        private readonly List<Parameter> _owned = [];
        public readonly Tape Tape = new(1 << 12);
        public readonly Ops Ops;
        public readonly Rng Rng;

        public Harness(ulong seed)
        {
            Ops = new Ops(Tape);
            Rng = new Rng(seed);
        }

        public Parameter Input(int[] shape, float std = 1f, bool requiresGrad = true)
        {
            var p = Parameter.Create("p" + _owned.Count, shape, requiresGrad);
            Rng.FillNormal(p.AsSpan(), 0f, std);
            _owned.Add(p);
            return p;
        }

        /// <summary>Backward of Σ r·y with random r; returns r.</summary>
        public float[] BackwardOfWeightedSum(Tensor y)
        {
            var r = Input([1, checked((int)y.Length)], requiresGrad: false);
            Tape.Backward(Ops.Linear(Ops.Reshape(y, 1, (int)y.Length), r));
            return r.AsSpan().ToArray();
        }

        public void Dispose()
        {
            foreach (var p in _owned) p.Dispose();
            Tape.Dispose();
        }
    }

    private static float[] V(Tensor t) => t.AsSpan().ToArray();
    private static float[] G(Tensor t) => t.GradSpan().ToArray();

    [Fact]
    public void NormsThroughTheTape()
    {
        using var h = new Harness(31);
        var x = h.Input([3, 9], 2f);
        var w = h.Input([9]);
        var b = h.Input([9]);
        var r = h.BackwardOfWeightedSum(h.Ops.LayerNorm(x, w, b, 1e-5f));
        AssertClose(Numeric(v => KernelReference.LayerNorm(v, D(V(w)), D(V(b)), 9, 1e-5), V(x), r), G(x), Tolerance, "dx");
        AssertClose(Numeric(v => KernelReference.LayerNorm(D(V(x)), v, D(V(b)), 9, 1e-5), V(w), r), G(w), Tolerance, "dw");
        AssertClose(Numeric(v => KernelReference.LayerNorm(D(V(x)), D(V(w)), v, 9, 1e-5), V(b), r), G(b), Tolerance, "db");

        using var h2 = new Harness(32);
        var x2 = h2.Input([3, 9], 2f);
        var w2 = h2.Input([9], requiresGrad: false);
        var r2 = h2.BackwardOfWeightedSum(h2.Ops.RmsNorm(x2, w2, 1e-6f));
        AssertClose(Numeric(v => KernelReference.RmsNorm(v, D(V(w2)), 9, 1e-6), V(x2), r2), G(x2), Tolerance, "dx rms");
        Assert.True(w2.Grad == null);
    }

    [Fact]
    public void ActivationsSoftmaxScaleThroughTheTape()
    {
        using var h = new Harness(33);
        var x = h.Input([2, 7], 2f);
        var u = h.Input([2, 7]);
        var y = h.Ops.Add(h.Ops.Add(h.Ops.Gelu(x), h.Ops.Silu(x)), h.Ops.Add(h.Ops.SwiGlu(x, u), h.Ops.Scale(h.Ops.Softmax(x), 3f)));
        var r = h.BackwardOfWeightedSum(y);
        double[] F(double[] xv, double[] uv)
        {
            var g = KernelReference.Gelu(xv);
            var s = KernelReference.Silu(xv);
            var sw = KernelReference.SwiGlu(xv, uv);
            var sm = KernelReference.Softmax(xv, 7);
            return g.Select((_, i) => g[i] + s[i] + sw[i] + 3 * sm[i]).ToArray();
        }
        AssertClose(Numeric(v => F(v, D(V(u))), V(x), r), G(x), Tolerance, "dx");
        AssertClose(Numeric(v => F(D(V(x)), v), V(u), r), G(u), Tolerance, "du");
    }

    [Fact]
    public void EmbeddingSplitAndDropoutThroughTheTape()
    {
        using var h = new Harness(34);
        var table = h.Input([5, 6]);
        int[] ids = [4, 1, 4];
        var state = h.Rng.State;
        var dropoutRng = new Rng(state);
        var parts = h.Ops.Split(h.Ops.Embedding(ids, table), 2, 4);
        var y = h.Ops.Dropout(parts[1], 0.5f, dropoutRng);
        var r = h.BackwardOfWeightedSum(y);
        var mask = new float[ids.Length * 4];
        fixed (float* m = mask) Activations.DropoutMask(new Rng(state), 0.5f, m, mask.Length);
        double[] F(double[] t)
        {
            var e = KernelReference.Embedding(ids, t, 6);
            var o = new double[ids.Length * 4];
            for (int i = 0; i < ids.Length; i++)
            for (int j = 0; j < 4; j++) o[i * 4 + j] = e[i * 6 + 2 + j] * mask[i * 4 + j];
            return o;
        }
        AssertClose(F(D(V(table))), V(y), 1e-6, "y");
        AssertClose(Numeric(F, V(table), r), G(table), Tolerance, "dtable");
        Assert.Contains(mask, m => m == 0f);

        h.Tape.Training = false;
        Assert.Same(parts[0], h.Ops.Dropout(parts[0], 0.5f, dropoutRng));
    }

    [Fact]
    public void RopeAndGroupedAttentionThroughTheTape()
    {
        int batch = 2, tokens = 4, heads = 4, kvHeads = 2, d = 6;
        using var h = new Harness(35);
        using var rope = RopeCache.Create(10000.0, d, 8);
        var q = h.Input([batch, tokens, heads, d]);
        var k = h.Input([batch, tokens, kvHeads, d]);
        var v = h.Input([batch, tokens, kvHeads, d]);
        int[] positions = [0, 1, 2, 3, 0, 1, 0, 1];
        int[] segments = [0, 0, 0, 0, 0, 0, 1, 1];
        int[] mask = [1, 1, 1, 0, 1, 1, 1, 1];
        var y = h.Ops.Attention(h.Ops.Rope(q, positions, rope), h.Ops.Rope(k, positions, rope), v, mask, segments);
        var r = h.BackwardOfWeightedSum(y);
        var invFreq = Enumerable.Range(0, d / 2).Select(i => (double)(float)(1.0 / Math.Pow(10000.0, 2.0 * i / d))).ToArray();
        double[] F(double[] qv, double[] kv, double[] vv) => KernelReference.Attention(
            KernelReference.Rope(qv, positions, invFreq, heads, d), KernelReference.Rope(kv, positions, invFreq, kvHeads, d), vv,
            mask, segments, batch, tokens, heads, kvHeads, d);
        AssertClose(F(D(V(q)), D(V(k)), D(V(v))), V(y), 1e-5, "y");
        AssertClose(Numeric(x => F(x, D(V(k)), D(V(v))), V(q), r), G(q), Tolerance, "dq");
        AssertClose(Numeric(x => F(D(V(q)), x, D(V(v))), V(k), r), G(k), Tolerance, "dk");
        AssertClose(Numeric(x => F(D(V(q)), D(V(k)), x), V(v), r), G(v), Tolerance, "dv");
    }

    [Fact]
    public void CrossEntropyThroughTheTapeWithIgnoredTokens()
    {
        using var h = new Harness(36);
        var logits = h.Input([4, 11], 2f);
        int[] targets = [-100, 3, 10, -100];
        var loss = h.Ops.CrossEntropy(logits, targets);
        h.Tape.Backward(loss);
        Assert.Equal(KernelReference.CrossEntropy(D(V(logits)), targets, 11), loss.AsSpan()[0], 1e-5);
        AssertClose(NumericScalar(v => KernelReference.CrossEntropy(v, targets, 11), V(logits)), G(logits), Tolerance, "dlogits");
    }
}
