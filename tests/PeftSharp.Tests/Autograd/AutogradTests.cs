using PeftSharp.Autograd;
using PeftSharp.Tensors;
using PeftSharp.Training.Optimizers;
using static PeftSharp.Tests.Kernels.GradCheck;

namespace PeftSharp.Tests.Autograd;

public unsafe class AutogradTests
{
    private static double[] LinearReference(double[] x, double[] w, double[] b, int m, int n, int k)
    {
        var y = new double[m * n];
        for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
        {
            double s = b[j];
            for (int p = 0; p < k; p++) s += x[i * k + p] * w[j * k + p];
            y[i * n + j] = s;
        }
        return y;
    }

    [Fact]
    public void LinearGradientsMatchFiniteDifferences()
    {
        int m = 5, n = 3, k = 7;
        var rng = new Rng(21);
        using var tape = new Tape();
        var ops = new Ops(tape);
        using var input = Parameter.Create("x", [m, k], requiresGrad: true);
        using var weight = Parameter.Create("w", [n, k], requiresGrad: true);
        using var bias = Parameter.Create("b", [n], requiresGrad: true);
        rng.FillNormal(input.AsSpan(), 0, 1);
        rng.FillNormal(weight.AsSpan(), 0, 1);
        rng.FillNormal(bias.AsSpan(), 0, 1);
        var r = RandomFloats(rng, m * n);
        using var rWeight = Parameter.Create("r", [1, m * n], requiresGrad: false);
        r.CopyTo(rWeight.AsSpan());

        var y = ops.Linear(input, weight, bias);
        // loss = Σ r·y, built from ops: a 1-output linear over the flattened y.
        var loss = ops.Linear(Ops.Reshape(y, 1, m * n), rWeight);
        tape.Backward(loss);

        float[] x = input.AsSpan().ToArray(), w = weight.AsSpan().ToArray(), b = bias.AsSpan().ToArray();
        AssertClose(LinearReference(D(x), D(w), D(b), m, n, k), y.AsSpan().ToArray(), 1e-5, "y");
        AssertClose(Numeric(v => LinearReference(v, D(w), D(b), m, n, k), x, r), input.GradSpan().ToArray(), 1e-4, "dx");
        AssertClose(Numeric(v => LinearReference(D(x), v, D(b), m, n, k), w, r), weight.GradSpan().ToArray(), 1e-4, "dw");
        AssertClose(Numeric(v => LinearReference(D(x), D(w), v, m, n, k), b, r), bias.GradSpan().ToArray(), 1e-4, "db");
    }

    [Fact]
    public void FrozenWeightGetsNoGradientButInputStillDoes()
    {
        using var tape = new Tape();
        var ops = new Ops(tape);
        var rng = new Rng(22);
        using var x = Parameter.Create("x", [4, 6], requiresGrad: true);
        using var frozen = Parameter.Create("w", [5, 6], requiresGrad: false);
        using var head = Parameter.Create("head", [3, 5], requiresGrad: true);
        rng.FillNormal(x.AsSpan(), 0, 1);
        rng.FillNormal(frozen.AsSpan(), 0, 1);
        rng.FillNormal(head.AsSpan(), 0, 1);
        var loss = ops.CrossEntropy(ops.Linear(ops.Linear(x, frozen), head), [0, 2, -100, 1]);
        tape.Backward(loss);
        Assert.True(frozen.Grad == null);
        Assert.Contains(x.GradSpan().ToArray(), g => g != 0f);
        Assert.Contains(head.GradSpan().ToArray(), g => g != 0f);

        // Nothing trainable upstream: no node is recorded at all.
        tape.Reset();
        using var frozenInput = Parameter.Create("x0", [4, 6], requiresGrad: false);
        var y = ops.Gelu(ops.Linear(frozenInput, frozen));
        Assert.False(y.RequiresGrad);
        Assert.Equal(0, tape.NodeCount);
    }

    [Fact]
    public void GradientsAccumulateAcrossMicroBatchesUntilZeroed()
    {
        using var tape = new Tape();
        var ops = new Ops(tape);
        using var table = Parameter.Create("wte", [4, 3], requiresGrad: true);
        new Rng(23).FillNormal(table.AsSpan(), 0, 1);
        float[] Once()
        {
            tape.Backward(ops.CrossEntropy(ops.Embedding([1, 2], table), [0, 2]));
            tape.Reset();
            return table.GradSpan().ToArray();
        }
        var g1 = Once();
        var g2 = Once();
        for (int i = 0; i < g1.Length; i++) Assert.Equal(2 * g1[i], g2[i], 1e-6f);
        table.ZeroGrad();
        Assert.Equal(g1, Once());
    }

    [Fact]
    public void ResidualFanInAndViewsShareGradients()
    {
        // loss = CE(x + x): the gradient w.r.t. x is twice CE's; the reshaped view feeds the same buffer.
        using var tape = new Tape();
        var ops = new Ops(tape);
        using var x = Parameter.Create("x", [2, 4], requiresGrad: true);
        new Rng(24).FillNormal(x.AsSpan(), 0, 1);
        var view = Ops.Reshape(x, 8);
        tape.Backward(ops.CrossEntropy(ops.Add(x, Ops.Reshape(view, 2, 4)), [1, 3]));
        var twice = x.GradSpan().ToArray();
        x.ZeroGrad();
        tape.Reset();
        tape.Backward(ops.CrossEntropy(ops.Scale(x, 2f), [1, 3]));
        var scaled = x.GradSpan().ToArray();
        Assert.Equal(scaled, twice);
        Assert.Contains(twice, g => g != 0f);
    }

    [Fact]
    public void AdamWMatchesTorchFormula()
    {
        int n = 37;
        using var p = Parameter.Create("p", [n], requiresGrad: true);
        var rng = new Rng(25);
        rng.FillNormal(p.AsSpan(), 0, 1);
        var pd = D(p.AsSpan().ToArray());
        var m = new double[n];
        var v = new double[n];
        using var opt = new AdamW([p], learningRate: 0.01f, beta1: 0.9f, beta2: 0.99f, eps: 1e-8f, weightDecay: 0.1f);
        for (int t = 1; t <= 3; t++)
        {
            var g = RandomFloats(rng, n);
            g.CopyTo(p.GradSpan());
            opt.Step();
            for (int i = 0; i < n; i++)
            {
                pd[i] *= 1 - 0.01 * 0.1;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
                double denom = Math.Sqrt(v[i]) / Math.Sqrt(1 - Math.Pow(0.99, t)) + 1e-8;
                pd[i] -= 0.01 / (1 - Math.Pow(0.9, t)) * m[i] / denom;
            }
        }
        AssertClose(pd, p.AsSpan().ToArray(), 1e-5, "p");
        Assert.Equal(3, opt.StepCount);
    }

    [Fact]
    public void AdamWClipsTheGlobalNormAndSkipsDecayWhereAsked()
    {
        using var a = Parameter.Create("a.weight", [3], requiresGrad: true);
        using var b = Parameter.Create("b.bias", [1], requiresGrad: true);
        using var frozen = Parameter.Create("f", [2], requiresGrad: false);
        new float[] { 3f, 0f, 4f }.CopyTo(a.GradSpan());
        b.GradSpan()[0] = 12f; // global norm 13
        using var opt = new AdamW([a, b, frozen], learningRate: 0.5f, weightDecay: 0.5f, applyWeightDecay: p => !p.Name.EndsWith(".bias", StringComparison.Ordinal));
        Assert.Equal(13f, opt.ClipGradNorm(1f), 1e-5f);
        Assert.Equal(3f / 13f, a.GradSpan()[0], 1e-5f);
        Assert.Equal(12f / 13f, b.GradSpan()[0], 1e-5f);
        Assert.Equal(1f, opt.ClipGradNorm(2f), 1e-4f); // under the limit: unchanged
        Assert.Equal(3f / 13f, a.GradSpan()[0], 1e-5f);

        a.AsSpan().Fill(1f);
        b.AsSpan().Fill(1f);
        a.GradSpan().Clear();
        b.GradSpan().Clear();
        opt.Step(); // zero gradients: only decay moves a parameter
        Assert.Equal(0.75f, a.AsSpan()[1]);
        Assert.Equal(1f, b.AsSpan()[0]);
        Assert.Equal(2, opt.Parameters.Count);
    }

    [Fact]
    public void ArenaGrowsInTheFirstStepThenReusesItsBlocks()
    {
        using var arena = new Arena(64, reserve: false);
        float* a = arena.Allocate(50, clear: true);
        float* b = arena.Allocate(100, clear: false);
        Assert.True(arena.Capacity > 64);
        long capacity = arena.Capacity;
        arena.Reset();
        // The same requests land at the same addresses: nothing new is mapped or touched.
        Assert.True(a == arena.Allocate(50, clear: true));
        Assert.True(b == arena.Allocate(100, clear: false));
        Assert.Equal(capacity, arena.Capacity);
        Assert.Equal(64 + 112, arena.HighWater); // 50 and 100 floats, each rounded up to the 16-float alignment
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReleaseRewindsAndTheFreedMemoryIsReused(bool reserve)
    {
        using var arena = new Arena(64, reserve);
        arena.Allocate(16, clear: false);
        var mark = arena.Mark();
        float* big = arena.Allocate(200, clear: false);
        arena.Allocate(40, clear: false);
        long capacity = arena.Capacity;
        arena.Release(mark);
        Assert.Equal(16, arena.Used);
        Assert.True(big == arena.Allocate(200, clear: true));
        Assert.Equal(capacity, arena.Capacity);
        arena.Reset();
        Assert.Throws<InvalidOperationException>(() => arena.Release(mark));
    }

    [Fact]
    public void AReservedArenaIsOneBlockThatGrowsInPlace()
    {
        using var arena = new Arena(64);
        if (!OperatingSystem.IsLinux()) return; // other systems chain blocks (the tests above)
        float* first = arena.Allocate(10, clear: true);
        float* big = arena.Allocate(50_000_000, clear: false);  // 200 MB: no new block, right after the first
        Assert.True(big == first + 16);
        big[49_999_999] = 1f;
        Assert.Equal(Arena.ReservedFloats, arena.Capacity);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TinyTransformerMemorizesASequenceDeterministically(bool llama)
    {
        var first = Train(llama);
        var second = Train(llama);
        Assert.Equal(first, second);
        Assert.True(first[0] > 2f, $"initial loss {first[0]} should be near ln(16)");
        Assert.True(first[^1] < 0.05f, $"final loss {first[^1]} after {first.Length} steps");
    }

    private static float[] Train(bool llama)
    {
        const int batch = 2, tokens = 12, steps = 200;
        var rng = new Rng(99);
        var sequence = new int[batch * (tokens + 1)];
        for (int i = 0; i < sequence.Length; i++) sequence[i] = rng.NextInt(TinyTransformer.Vocab);
        var ids = new int[batch * tokens];
        var targets = new int[batch * tokens];
        var positions = new int[batch * tokens];
        for (int b = 0; b < batch; b++)
        for (int t = 0; t < tokens; t++)
        {
            ids[b * tokens + t] = sequence[b * (tokens + 1) + t];
            targets[b * tokens + t] = sequence[b * (tokens + 1) + t + 1];
            positions[b * tokens + t] = t;
        }
        using var model = new TinyTransformer(llama, seed: 7);
        using var tape = new Tape(1 << 16);
        var ops = new Ops(tape);
        using var optimizer = new AdamW(model.Parameters, learningRate: 1e-2f, weightDecay: 0f);
        var losses = new float[steps];
        for (int step = 0; step < steps; step++)
        {
            var loss = ops.CrossEntropy(model.Forward(ops, ids, positions, batch, tokens), targets);
            losses[step] = loss.AsSpan()[0];
            tape.Backward(loss);
            optimizer.Step();
            optimizer.ZeroGrad();
            tape.Reset();
        }
        return losses;
    }
}
