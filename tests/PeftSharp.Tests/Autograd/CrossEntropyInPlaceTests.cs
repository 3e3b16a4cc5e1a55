using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Autograd;

public unsafe class CrossEntropyInPlaceTests
{
    private static (float[] DW, float[] DX, float Loss, long ArenaPeak) Run(bool overwrite)
    {
        var rng = new Rng(9);
        using var w = Parameter.Create("w", [37, 11], requiresGrad: true);
        using var x = Parameter.Create("x", [13, 11], requiresGrad: true);
        rng.FillNormal(w.AsSpan(), 0, 1);
        rng.FillNormal(x.AsSpan(), 0, 1);
        int[] targets = Enumerable.Range(0, 13).Select(i => i % 5 == 0 ? -100 : (i * 7) % 37).ToArray();
        using var tape = new Tape(1 << 12);
        var ops = new Ops(tape);
        var loss = ops.CrossEntropy(ops.Linear(x, w), targets, overwrite);
        tape.Backward(loss);
        return (w.GradSpan().ToArray(), x.GradSpan().ToArray(), *loss.Data, tape.Arena.HighWater);
    }

    [Fact]
    public void WritingTheLogitGradientOverTheLogitsChangesNothingButMemory()
    {
        var separate = Run(overwrite: false);
        var inPlace = Run(overwrite: true);
        Assert.Equal(separate.Loss, inPlace.Loss);
        Assert.Equal(separate.DW, inPlace.DW);
        Assert.Equal(separate.DX, inPlace.DX);
        // The 13 × 37 logit-gradient buffer (rounded up to the arena's 64-byte alignment) is never allocated.
        Assert.Equal((13 * 37 + 15) / 16 * 16, separate.ArenaPeak - inPlace.ArenaPeak);
    }
}
