using PeftSharp.Kernels;
using PeftSharp.Tensors;
using static PeftSharp.Tests.Kernels.GradCheck;

namespace PeftSharp.Tests.Kernels;

/// <summary>Each hand-written backward against central differences of the double reference forward.</summary>
public unsafe class KernelGradientTests
{
    private const double Tolerance = 2e-4;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void LayerNorm(bool withBias)
    {
        var rng = new Rng(1);
        int rows = 3, c = 19;
        var x = RandomFloats(rng, rows * c, 2f);
        var w = RandomFloats(rng, c);
        var b = RandomFloats(rng, c);
        var r = RandomFloats(rng, rows * c);
        var y = new float[rows * c];
        var mean = new float[rows];
        var rstd = new float[rows];
        var dx = new float[rows * c];
        var dw = new float[c];
        var db = new float[c];
        fixed (float* px = x, pw = w, pb = b, pr = r, py = y, pm = mean, ps = rstd, pdx = dx, pdw = dw, pdb = db)
        {
            float* bias = withBias ? pb : null;
            Norms.LayerNormForward(px, pw, bias, pm, ps, py, rows, c, 1e-5f);
            Norms.LayerNormBackward(px, pw, pm, ps, pr, pdx, pdw, withBias ? pdb : null, rows, c);
        }
        double[]? bd = withBias ? D(b) : null;
        AssertClose(KernelReference.LayerNorm(D(x), D(w), bd, c, 1e-5), y, 1e-5, "y");
        AssertClose(Numeric(v => KernelReference.LayerNorm(v, D(w), bd, c, 1e-5), x, r), dx, Tolerance, "dx");
        AssertClose(Numeric(v => KernelReference.LayerNorm(D(x), v, bd, c, 1e-5), w, r), dw, Tolerance, "dw");
        if (withBias) AssertClose(Numeric(v => KernelReference.LayerNorm(D(x), D(w), v, c, 1e-5), b, r), db, Tolerance, "db");
        else Assert.All(db, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void RmsNorm()
    {
        var rng = new Rng(2);
        int rows = 4, c = 21;
        var x = RandomFloats(rng, rows * c, 2f);
        var w = RandomFloats(rng, c);
        var r = RandomFloats(rng, rows * c);
        var y = new float[rows * c];
        var rstd = new float[rows];
        var dx = new float[rows * c];
        var dw = new float[c];
        fixed (float* px = x, pw = w, pr = r, py = y, ps = rstd, pdx = dx, pdw = dw)
        {
            Norms.RmsNormForward(px, pw, ps, py, rows, c, 1e-6f);
            Norms.RmsNormBackward(px, pw, ps, pr, pdx, pdw, rows, c);
        }
        AssertClose(KernelReference.RmsNorm(D(x), D(w), c, 1e-6), y, 1e-5, "y");
        AssertClose(Numeric(v => KernelReference.RmsNorm(v, D(w), c, 1e-6), x, r), dx, Tolerance, "dx");
        AssertClose(Numeric(v => KernelReference.RmsNorm(D(x), v, c, 1e-6), w, r), dw, Tolerance, "dw");
    }

    [Fact]
    public void GeluAndSilu()
    {
        var rng = new Rng(3);
        int n = 37;
        var x = RandomFloats(rng, n, 3f);
        var r = RandomFloats(rng, n);
        var y = new float[n];
        var dx = new float[n];
        var dxPrior = RandomFloats(rng, n);
        fixed (float* px = x, pr = r, py = y, pdx = dx)
        {
            Activations.GeluForward(px, py, n);
            AssertClose(KernelReference.Gelu(D(x)), y, 1e-5, "gelu");
            Activations.GeluBackward(px, pr, pdx, n);
            AssertClose(Numeric(KernelReference.Gelu, x, r), dx, Tolerance, "dgelu");

            dxPrior.CopyTo(dx, 0);
            Activations.SiluForward(px, py, n);
            AssertClose(KernelReference.Silu(D(x)), y, 1e-5, "silu");
            Activations.SiluBackward(px, pr, pdx, n);
            var expected = Numeric(KernelReference.Silu, x, r).Select((g, i) => g + dxPrior[i]).ToArray();
            AssertClose(expected, dx, Tolerance, "dsilu accumulates");
        }
    }

    [Fact]
    public void SwiGlu()
    {
        var rng = new Rng(4);
        int n = 29;
        var gate = RandomFloats(rng, n, 3f);
        var up = RandomFloats(rng, n);
        var r = RandomFloats(rng, n);
        var y = new float[n];
        var dgate = new float[n];
        var dup = new float[n];
        fixed (float* pg = gate, pu = up, pr = r, py = y, pdg = dgate, pdu = dup)
        {
            Activations.SwiGluForward(pg, pu, py, n);
            Activations.SwiGluBackward(pg, pu, pr, pdg, pdu, n);
        }
        AssertClose(KernelReference.SwiGlu(D(gate), D(up)), y, 1e-5, "y");
        AssertClose(Numeric(v => KernelReference.SwiGlu(v, D(up)), gate, r), dgate, Tolerance, "dgate");
        AssertClose(Numeric(v => KernelReference.SwiGlu(D(gate), v), up, r), dup, Tolerance, "dup");
    }

    [Fact]
    public void DropoutWithFixedMask()
    {
        int n = 1000;
        var rng = new Rng(5);
        var x = RandomFloats(rng, n);
        var r = RandomFloats(rng, n);
        var mask = new float[n];
        var mask2 = new float[n];
        var y = new float[n];
        var dx = new float[n];
        var state = rng.State;
        fixed (float* px = x, pr = r, pm = mask, pm2 = mask2, py = y, pdx = dx)
        {
            Activations.DropoutMask(rng, 0.25f, pm, n);
            Activations.DropoutMask(new Rng(state), 0.25f, pm2, n);
            Activations.ApplyMask(px, pm, py, n, accumulate: false);
            Activations.ApplyMask(pr, pm, pdx, n, accumulate: true);
        }
        Assert.Equal(mask, mask2);
        int dropped = mask.Count(m => m == 0f);
        Assert.InRange(dropped, 200, 300);
        Assert.All(mask, m => Assert.True(m == 0f || m == 1f / 0.75f));
        var maskD = D(mask);
        AssertClose(Numeric(v => v.Select((e, i) => e * maskD[i]).ToArray(), x, r), dx, Tolerance, "dx");
    }

    [Fact]
    public void SoftmaxRows()
    {
        var rng = new Rng(6);
        int rows = 3, c = 23;
        var x = RandomFloats(rng, rows * c, 4f);
        x[5] = 80f; // stability: large logits must not overflow
        var r = RandomFloats(rng, rows * c);
        var y = new float[rows * c];
        var dx = new float[rows * c];
        fixed (float* px = x, pr = r, py = y, pdx = dx)
        {
            Softmax.Forward(px, py, rows, c);
            Softmax.Backward(py, pr, pdx, rows, c);
        }
        AssertClose(KernelReference.Softmax(D(x), c), y, 1e-5, "y");
        AssertClose(Numeric(v => KernelReference.Softmax(v, c), x, r), dx, Tolerance, "dx");
    }

    [Fact]
    public void CrossEntropyWithIgnoreIndex()
    {
        var rng = new Rng(7);
        int rows = 5, vocab = 41;
        var logits = RandomFloats(rng, rows * vocab, 3f);
        int[] targets = [3, -100, 40, 0, -100];
        var losses = new float[rows];
        var lse = new float[rows];
        var dlogits = new float[rows * vocab];
        float loss;
        fixed (float* pl = logits, pls = losses, plse = lse, pd = dlogits)
        fixed (int* pt = targets)
        {
            loss = CrossEntropy.Forward(pl, pt, pls, plse, rows, vocab);
            CrossEntropy.Backward(pl, pt, plse, 1f, pd, rows, vocab, accumulate: true);
        }
        Assert.Equal(KernelReference.CrossEntropy(D(logits), targets, vocab), loss, 1e-5);
        AssertClose(NumericScalar(v => KernelReference.CrossEntropy(v, targets, vocab), logits), dlogits, Tolerance, "dlogits");
        for (int i = 0; i < vocab; i++) Assert.Equal(0f, dlogits[vocab + i]);

        // Overwriting the logits buffer in place gives the same gradient.
        fixed (float* pl = logits, plse = lse)
        fixed (int* pt = targets)
            CrossEntropy.Backward(pl, pt, plse, 1f, pl, rows, vocab, accumulate: false);
        Assert.Equal(dlogits, logits);
    }

    [Fact]
    public void EmbeddingScatterAdd()
    {
        var rng = new Rng(8);
        int vocab = 6, c = 5;
        int[] ids = [2, 0, 2, 5];
        int[] positions = [0, 1, 2, 3];
        var table = RandomFloats(rng, vocab * c);
        var wpe = RandomFloats(rng, 4 * c);
        var r = RandomFloats(rng, ids.Length * c);
        var y = new float[ids.Length * c];
        var dtable = new float[vocab * c];
        var dwpe = new float[4 * c];
        fixed (float* pt = table, pw = wpe, pr = r, py = y, pdt = dtable, pdw = dwpe)
        fixed (int* pi = ids, pp = positions)
        {
            Embedding.Forward(pi, pt, py, ids.Length, c, vocab, accumulate: false);
            Embedding.Forward(pp, pw, py, ids.Length, c, 4, accumulate: true);
            Embedding.Backward(pi, pr, pdt, ids.Length, c);
            Embedding.Backward(pp, pr, pdw, ids.Length, c);
        }
        double[] Forward(double[] t, double[] p) => KernelReference.Embedding(ids, t, c).Zip(KernelReference.Embedding(positions, p, c), (a, b) => a + b).ToArray();
        AssertClose(Forward(D(table), D(wpe)), y, 1e-6, "y");
        AssertClose(Numeric(v => Forward(v, D(wpe)), table, r), dtable, Tolerance, "dtable");
        AssertClose(Numeric(v => Forward(D(table), v), wpe, r), dwpe, Tolerance, "dwpe");
        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            fixed (float* pt = table, py = y)
            fixed (int* bad = new[] { vocab })
                Embedding.Forward(bad, pt, py, 1, c, vocab, false);
        });
    }

    [Fact]
    public void RopeRotateHalf()
    {
        var rng = new Rng(9);
        int tokens = 4, heads = 3, headDim = 10, maxPositions = 16;
        var x = RandomFloats(rng, tokens * heads * headDim);
        var r = RandomFloats(rng, x.Length);
        int[] positions = [0, 7, 1, 15];
        var invFreq = new float[headDim / 2];
        var cos = new float[maxPositions * headDim / 2];
        var sin = new float[cos.Length];
        var y = new float[x.Length];
        var dx = new float[x.Length];
        fixed (float* px = x, pr = r, pf = invFreq, pc = cos, ps = sin, py = y, pdx = dx)
        fixed (int* pp = positions)
        {
            Rope.InverseFrequencies(10000.0, headDim, pf);
            Rope.BuildTable(pf, headDim / 2, maxPositions, pc, ps);
            Rope.Forward(px, pp, pc, ps, py, tokens, heads, headDim, maxPositions);
            Rope.Backward(pr, pp, pc, ps, pdx, tokens, heads, headDim);
        }
        Assert.Equal(1f, invFreq[0]);
        Assert.Equal(1.0 / Math.Pow(10000, 0.2), invFreq[1], 1e-7);
        var freqD = D(invFreq);
        AssertClose(KernelReference.Rope(D(x), positions, freqD, heads, headDim), y, 1e-5, "y");
        AssertClose(Numeric(v => KernelReference.Rope(v, positions, freqD, heads, headDim), x, r), dx, Tolerance, "dx");
    }
}
