using PeftSharp.Autograd;
using PeftSharp.Tensors;
using PeftSharp.Training;
using PeftSharp.Training.Optimizers;

namespace PeftSharp.Tests.Training;

public sealed class OptimizerTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "peftsharp-opt-" + Guid.NewGuid().ToString("N"));

    public OptimizerTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, true);

    private static Parameter Param(string name, int[] shape, ulong seed)
    {
        var p = Parameter.Create(name, shape, requiresGrad: true);
        new Rng(seed).FillNormal(p.AsSpan(), 0f, 1f);
        return p;
    }

    private static void Grad(Parameter p, ulong seed, int step) => new Rng(seed * 1000 + (ulong)step).FillNormal(p.GradSpan(), 0f, 0.1f);

    [Fact]
    public void BiasesAndOneDimensionalParametersDoNotDecay()
    {
        var w = Param("layer.weight", [4, 4], 1);
        var b = Param("layer.bias", [4], 2);
        var norm = Param("norm.weight", [4], 3);
        Assert.True(GradientNorm.Decays(w));
        Assert.False(GradientNorm.Decays(b));
        Assert.False(GradientNorm.Decays(norm));
        var args = new TrainingArguments { LearningRate = 0.1, WeightDecay = 0.5 };
        var before = (w.AsSpan().ToArray(), b.AsSpan().ToArray());
        using var opt = Optimizer.Create(args, [w, b]);
        opt.Step(); // zero gradients: only decay moves anything
        Assert.Equal(before.Item2, b.AsSpan().ToArray());
        Assert.Equal(before.Item1.Select(x => x * 0.95f), w.AsSpan().ToArray());
        w.Dispose(); b.Dispose(); norm.Dispose();
    }

    [Fact]
    public void SgdIsPlainGradientDescentWithL2Decay()
    {
        var w = Param("w", [3, 2], 4);
        var p0 = w.AsSpan().ToArray();
        Grad(w, 4, 0);
        var g = w.GradSpan().ToArray();
        using var opt = Optimizer.Create(new TrainingArguments { Optim = "sgd", LearningRate = 0.5, WeightDecay = 0.1 }, [w]);
        opt.Step();
        for (int i = 0; i < p0.Length; i++) Assert.Equal(p0[i] - 0.5f * (g[i] + 0.1f * p0[i]), w.AsSpan()[i], 6);
        w.Dispose();
    }

    [Fact]
    public void GlobalNormClippingScalesAllGradients()
    {
        var a = Parameter.Create("a", [1], true);
        var b = Parameter.Create("b", [1], true);
        a.GradSpan()[0] = 3;
        b.GradSpan()[0] = 4;
        Assert.Equal(5f, GradientNorm.Clip([a, b], 1f));
        Assert.Equal(3 / (5 + 1e-6f), a.GradSpan()[0], 6);
        Assert.Equal(4 / (5 + 1e-6f), b.GradSpan()[0], 6);
        Assert.Equal(1f, GradientNorm.Compute([a, b]), 5);
        a.Dispose(); b.Dispose();
    }

    [Fact]
    public void EightBitAdamWTracksAdamWAndKeepsSmallTensorsInFloat32()
    {
        var big32 = Param("big.weight", [64, 128], 7);
        var big8 = Param("big.weight", [64, 128], 7);
        var small32 = Param("small.weight", [16, 16], 8);
        var small8 = Param("small.weight", [16, 16], 8);
        using var full = new AdamW([big32, small32], 1e-2f, weightDecay: 0.01f);
        using var eight = new AdamW8bit([big8, small8], 1e-2f, weightDecay: 0.01f);
        for (int step = 0; step < 5; step++)
        {
            foreach (var p in new[] { big32, big8 }) Grad(p, 7, step);
            foreach (var p in new[] { small32, small8 }) Grad(p, 8, step);
            full.Step();
            eight.Step();
        }
        Assert.Equal(small32.AsSpan().ToArray(), small8.AsSpan().ToArray());
        var (m8, v8) = eight.Moments(big8);
        var m32 = full.FirstMoment(big32).Span.ToArray();
        var v32 = full.SecondMoment(big32).Span.ToArray();
        double maxM = m32.Max(Math.Abs), maxV = v32.Max();
        double errM = m32.Zip(m8, (a, b) => Math.Abs(a - b)).Max(), errV = v32.Zip(v8, (a, b) => Math.Abs(a - b)).Max();
        Assert.InRange(errM / maxM, 1e-6, 0.05);
        Assert.InRange(errV / maxV, 1e-7, 0.05);
        Assert.All(v8, x => Assert.True(x >= 0));
        double moved = big32.AsSpan().ToArray().Zip(Param("x", [64, 128], 7).AsSpan().ToArray(), (a, b) => Math.Abs(a - b)).Average();
        double diff = big32.AsSpan().ToArray().Zip(big8.AsSpan().ToArray(), (a, b) => Math.Abs(a - b)).Average();
        Assert.True(diff < 0.1 * moved, $"8-bit drifted {diff} vs movement {moved}");
        // The largest |m| of each block is exactly representable (code 1.0 · absmax).
        int argmax = Array.IndexOf(m8, m8.Take(256).MaxBy(Math.Abs));
        Assert.Equal(m8.Take(256).Max(Math.Abs), Math.Abs(m8[argmax]));
    }

    [Theory]
    [InlineData("adamw_torch")]
    [InlineData("adamw_8bit")]
    [InlineData("sgd")]
    public void StateSavedAndLoadedContinuesBitForBit(string optim)
    {
        var args = new TrainingArguments { Optim = optim, LearningRate = 1e-2, WeightDecay = 0.1 };
        var a = Param("w", [80, 64], 9);
        var b = Param("w", [80, 64], 9);
        using var first = Optimizer.Create(args, [a]);
        for (int s = 0; s < 3; s++) { Grad(a, 9, s); first.Step(); }
        string path = Path.Combine(_dir, optim + ".safetensors");
        first.SaveState(path);
        a.AsSpan().CopyTo(b.AsSpan());
        using var second = Optimizer.Create(args, [b]);
        second.LoadState(path);
        Assert.Equal(3, second.StepCount);
        for (int s = 3; s < 5; s++)
        {
            Grad(a, 9, s); Grad(b, 9, s);
            first.Step(); second.Step();
        }
        Assert.Equal(a.AsSpan().ToArray(), b.AsSpan().ToArray());
        var other = Optimizer.Create(new TrainingArguments { Optim = optim == "sgd" ? "adamw_torch" : "sgd" }, [b]);
        Assert.Throws<PeftSharpException>(() => other.LoadState(path));
        other.Dispose(); a.Dispose(); b.Dispose();
    }
}
