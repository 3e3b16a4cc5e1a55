using PeftSharp.Autograd;
using PeftSharp.Tensors;
using static PeftSharp.Tests.Kernels.GradCheck;

namespace PeftSharp.Tests.Autograd;

/// <summary>The row-chunked loss (logit and input gradients taken during forward) against the plain one, and a finite-difference check.</summary>
public unsafe class CrossEntropyInRowChunksTests
{
    private const int Rows = 13, In = 11, Vocab = 37;

    private static int[] Targets() => Enumerable.Range(0, Rows).Select(i => i % 5 == 0 ? -100 : (i * 7) % Vocab).ToArray();

    /// <summary>loss(x) = CE(frozen head(x · Wᵀ)) with x itself computed from a trainable parameter u (so the input gradient flows on).</summary>
    private static (float Loss, float[] DU, long ArenaPeak) Run(int chunkRows, float[]? u0 = null, int[]? targets = null)
    {
        var rng = new Rng(9);
        using var w = Parameter.Create("w", [Vocab, In], requiresGrad: false);
        using var b = Parameter.Create("b", [Vocab], requiresGrad: false);
        using var u = Parameter.Create("u", [Rows, In], requiresGrad: true);
        rng.FillNormal(w.AsSpan(), 0, 1);
        rng.FillNormal(b.AsSpan(), 0, 1);
        if (u0 != null) u0.CopyTo(u.AsSpan());
        else rng.FillNormal(u.AsSpan(), 0, 1);
        using var tape = new Tape(1 << 10);
        var ops = new Ops(tape);
        var x = ops.Scale(u, 1.5f);
        var loss = chunkRows == 0
            ? ops.CrossEntropy(ops.Linear(x, w, b), targets ?? Targets())
            : ops.CrossEntropyInRowChunks(x, h => ops.Linear(h, w, b), targets ?? Targets(), chunkRows);
        tape.Backward(loss);
        return (*loss.Data, u.GradSpan().ToArray(), tape.Arena.HighWater);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(13)]
    [InlineData(40)]
    public void ChunksGiveThePlainLossAndInputGradient(int chunkRows)
    {
        var plain = Run(0);
        var chunked = Run(chunkRows);
        Assert.InRange(chunked.Loss - plain.Loss, -1e-6f, 1e-6f);
        Assert.Contains(plain.DU, v => v != 0f);
        AssertClose(D(plain.DU), chunked.DU, 1e-6, "du");
    }

    [Fact]
    public void FiniteDifferencesInDoubleAgree()
    {
        var u0 = RandomFloats(new Rng(4), Rows * In);
        var analytic = Run(4, u0).DU;
        var numeric = NumericScalar(u => Reference(u), u0);
        AssertClose(numeric, analytic, 2e-4, "du");
    }

    /// <summary>The same loss in double, for the finite differences.</summary>
    private static double Reference(double[] u)
    {
        var rng = new Rng(9);
        var w = new float[Vocab * In];
        var b = new float[Vocab];
        rng.FillNormal(w, 0, 1);
        rng.FillNormal(b, 0, 1);
        var targets = Targets();
        double sum = 0;
        int count = 0;
        for (int r = 0; r < Rows; r++)
        {
            if (targets[r] == -100) continue;
            var logits = new double[Vocab];
            for (int v = 0; v < Vocab; v++)
            {
                double z = b[v];
                for (int k = 0; k < In; k++) z += 1.5 * u[r * In + k] * w[v * In + k];
                logits[v] = z;
            }
            double max = logits.Max();
            double lse = max + Math.Log(logits.Sum(z => Math.Exp(z - max)));
            sum += lse - logits[targets[r]];
            count++;
        }
        return sum / count;
    }

    [Fact]
    public void AllIgnoredGivesZeroLossAndGradient()
    {
        var run = Run(4, targets: Enumerable.Repeat(-100, Rows).ToArray());
        Assert.Equal(0f, run.Loss);
        Assert.All(run.DU, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void OnlyOneChunkOfLogitsIsHeldAtATime()
    {
        long plain = Run(0).ArenaPeak, chunked = Run(2).ArenaPeak;
        // The plain loss holds the 13 × 37 logits; the chunked one two rows of them plus the saved 13 × 11 input gradient.
        Assert.True(chunked < plain, $"chunked arena peak {chunked} floats vs {plain}");
    }
}
