using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Tensors;
using static PeftSharp.Tests.Kernels.GradCheck;

namespace PeftSharp.Tests.Autograd;

/// <summary>
/// The preference objectives' ops (per-token log-probs of given targets, sums by sequence, row gathers, log-sigmoid, a
/// scalar of a small vector) against naive double oracles, with central-difference gradients of Σ r·op(x).
/// </summary>
public unsafe class SequenceOpsGradientTests
{
    private const double Tolerance = 2e-4;

    private static Parameter Input(Rng rng, int[] shape, float std = 1f, bool requiresGrad = true)
    {
        var p = Parameter.Create("x", shape, requiresGrad);
        rng.FillNormal(p.AsSpan(), 0f, std);
        return p;
    }

    private static float[] V(Tensor t) => t.AsSpan().ToArray();
    private static float[] G(Tensor t) => t.GradSpan().ToArray();

    /// <summary>Backward of Σ r·y through a frozen 1-row Linear holding r.</summary>
    private static float[] BackwardOfWeightedSum(Ops ops, Tensor y, Rng rng)
    {
        using var r = Input(rng, [1, (int)y.Length], requiresGrad: false);
        ops.Tape.Backward(ops.Linear(Ops.Reshape(y, 1, (int)y.Length), r));
        return r.AsSpan().ToArray();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TokenLogProbsMatchTheOracleAndItsGradient(bool overwriteLogits)
    {
        var rng = new Rng(41);
        using var tape = new Tape(1 << 12);
        var ops = new Ops(tape);
        using var logits = Input(rng, [5, 13], 2f);
        var before = V(logits);
        int[] targets = [3, -100, 12, 0, 7];
        // Through a Scale so the op's input is an activation (the in-place path only writes over activations).
        var x = ops.Scale(logits, 1f);
        var y = ops.TokenLogProbs(x, targets, overwriteLogits);
        AssertClose(KernelReference.TokenLogProbs(D(before), targets, 13), V(y), 1e-5, "y");
        Assert.Equal(0f, V(y)[1]);
        var r = BackwardOfWeightedSum(ops, y, rng);
        AssertClose(Numeric(v => KernelReference.TokenLogProbs(v, targets, 13), before, r), G(logits), Tolerance, "dlogits");
    }

    [Fact]
    public void RowChunkedTokenLogProbsEqualTheWholeOnesWithTheSameGradient()
    {
        var rng = new Rng(42);
        using var hidden = Input(rng, [7, 6]);
        using var head = Input(rng, [11, 6], 0.5f, requiresGrad: false);
        int[] targets = [1, 10, -100, 4, 4, 0, -100];
        float[] whole, wholeGrad, r;
        using (var tape = new Tape(1 << 12))
        {
            var ops = new Ops(tape);
            var y = ops.TokenLogProbs(ops.Linear(hidden, head), targets);
            whole = V(y);
            r = BackwardOfWeightedSum(ops, y, rng);
            wholeGrad = G(hidden);
        }
        hidden.ZeroGrad();
        using (var tape = new Tape(1 << 12))
        {
            var ops = new Ops(tape);
            var y = ops.TokenLogProbsInRowChunks(hidden, h => ops.Linear(h, head), targets, chunkRows: 3);
            AssertClose(D(whole), V(y), 1e-6, "y");
            using var rp = Parameter.Create("r", [1, 7], false);
            r.CopyTo(rp.AsSpan());
            tape.Backward(ops.Linear(Ops.Reshape(y, 1, 7), rp));
            AssertClose(D(wholeGrad), G(hidden), 1e-5, "dhidden");
        }
        double[] F(double[] hv)
        {
            var logits = new double[7 * 11];
            var w = D(V(head));
            for (int i = 0; i < 7; i++)
                for (int o = 0; o < 11; o++)
                    for (int k = 0; k < 6; k++) logits[i * 11 + o] += hv[i * 6 + k] * w[o * 6 + k];
            return KernelReference.TokenLogProbs(logits, targets, 11);
        }
        AssertClose(Numeric(F, V(hidden), r), wholeGrad, Tolerance, "dhidden vs differences");
    }

    [Fact]
    public void SumBySegmentGatherRowsAndLogSigmoid()
    {
        var rng = new Rng(43);
        using var tape = new Tape(1 << 12);
        var ops = new Ops(tape);
        using var x = Input(rng, [4, 3], 3f);
        int[] rows = [3, 0, 3];
        int[] segments = [0, 0, -1, 1, 2, 2, 2, -1, 1];
        var gathered = ops.GatherRows(x, rows);
        var sums = ops.SumBySegment(Ops.Reshape(gathered, 9), segments, 3);
        var y = ops.LogSigmoid(sums);
        double[] F(double[] xv)
        {
            var g = new double[9];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i * 3 + j] = xv[rows[i] * 3 + j];
            return KernelReference.LogSigmoid(KernelReference.SumBySegment(g, segments, 3));
        }
        AssertClose(F(D(V(x))), V(y), 1e-6, "y");
        var r = BackwardOfWeightedSum(ops, y, rng);
        AssertClose(Numeric(F, V(x), r), G(x), Tolerance, "dx");
    }

    [Fact]
    public void LogSigmoidIsStableFarFromZero()
    {
        Assert.Equal(-1000.0, PreferenceMath.LogSigmoid(-1000), 9);
        Assert.True(Math.Abs(PreferenceMath.LogSigmoid(40) + Math.Exp(-40)) < 1e-30);
        Assert.Equal(-Math.Log(2), PreferenceMath.LogSigmoid(0), 15);
        Assert.Equal(1.0, PreferenceMath.Sigmoid(800), 15);
        Assert.Equal(0.0, PreferenceMath.Sigmoid(-800), 15);
    }

    [Fact]
    public void ScalarFunctionPassesItsGradientOn()
    {
        var rng = new Rng(44);
        using var tape = new Tape(1 << 12);
        var ops = new Ops(tape);
        using var x = Input(rng, [3]);
        var xs = V(x);
        double F(double[] v) => -PreferenceMath.LogSigmoid(2 * (v[0] - v[1])) + v[2] * v[2];
        double[] grad = [-2 * PreferenceMath.Sigmoid(-2 * (xs[0] - xs[1])), 2 * PreferenceMath.Sigmoid(-2 * (xs[0] - xs[1])), 2.0 * xs[2]];
        var y = ops.ScalarFunction(ops.Scale(x, 1f), F(D(xs)), grad);
        tape.Backward(ops.Scale(y, 3f));
        AssertClose(NumericScalar(v => 3 * F(v), xs), G(x), Tolerance, "dx");
    }
}
