using System.Numerics.Tensors;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Kernels;

/// <summary>The online (block-by-block) cross-entropy against the whole-row kernel, on every vector path.</summary>
[Collection(SimdForcingCollection.Name)]
public unsafe class BlockedCrossEntropyTests
{
    public static TheoryData<SimdPath, int> Cases()
    {
        var data = new TheoryData<SimdPath, int>();
        foreach (var path in new[] { SimdPath.Scalar, SimdPath.Vector256, SimdPath.Vector512 })
        foreach (int width in new[] { 1, 7, 48, 250, 1001, 4096 })
            data.Add(path, width);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void BlocksGiveTheWholeRowLossAndTheFirstArgmax(SimdPath path, int blockWidth)
    {
        const int rows = 37, vocab = 1001;
        var rng = new Rng((ulong)blockWidth);
        var logits = new float[rows * vocab];
        rng.FillNormal(logits, 0f, 3f);
        var targets = new int[rows];
        for (int r = 0; r < rows; r++) targets[r] = r % 5 == 4 ? CrossEntropy.IgnoreIndex : rng.NextInt(vocab);
        // Ties across blocks: row 0's maximum appears at columns 3 and 900, row 1's at 0 and 1000.
        logits[3] = logits[900] = 50f;
        logits[vocab] = logits[vocab + 1000] = 40f;
        // A row whose target holds the maximum and one with a large shift after the first block.
        logits[2 * vocab + targets[2]] = 30f;
        logits[3 * vocab + vocab - 1] = 80f;

        var expected = new float[rows];
        var lse = new float[rows];
        var losses = new float[rows];
        var argmax = new int[rows];
        var state = new float[3 * rows];
        var argmaxState = new int[rows];
        float mean, expectedMean;
        fixed (float* l = logits, e = expected, s = lse, o = losses, st = state)
        fixed (int* t = targets, am = argmaxState)
        {
            using (Simd.Force(SimdPath.Scalar)) expectedMean = CrossEntropy.Forward(l, t, e, s, rows, vocab);
            using (Simd.Force(path))
            {
                var bs = new BlockedCrossEntropy.State { Max = st, Sum = st + rows, TargetLogit = st + 2 * rows, Argmax = am };
                BlockedCrossEntropy.Begin(bs, t, rows, vocab);
                var block = new float[rows * blockWidth];
                fixed (float* b = block)
                    for (int column = 0; column < vocab; column += blockWidth)
                    {
                        int width = Math.Min(blockWidth, vocab - column);
                        for (int r = 0; r < rows; r++)
                            Array.Copy(logits, r * vocab + column, block, r * width, width);
                        BlockedCrossEntropy.Accumulate(bs, b, rows, width, column, t);
                    }
                mean = BlockedCrossEntropy.Finish(bs, t, o, rows);
                argmaxState.CopyTo(argmax, 0);
            }
        }
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == CrossEntropy.IgnoreIndex)
            {
                Assert.Equal(0f, losses[r]);
                continue;
            }
            Assert.True(Math.Abs(losses[r] - expected[r]) <= 2e-5f * Math.Max(1f, Math.Abs(expected[r])), $"row {r}: {losses[r]} vs {expected[r]}");
            Assert.Equal(TensorPrimitives.IndexOfMax(new ReadOnlySpan<float>(logits, r * vocab, vocab)), argmax[r]);
        }
        Assert.Equal(3, argmax[0]);
        Assert.Equal(0, argmax[1]);
        Assert.Equal(vocab - 1, argmax[3]);
        Assert.True(Math.Abs(mean - expectedMean) <= 1e-5f * Math.Abs(expectedMean));
    }

    [Fact]
    public void ATargetOutsideTheVocabularyIsRejectedBeforeAnyWork()
    {
        var targets = new[] { 2, 9 };
        var state = new float[6];
        var argmax = new int[2];
        fixed (float* st = state)
        fixed (int* t = targets, am = argmax)
        {
            var bs = new BlockedCrossEntropy.State { Max = st, Sum = st + 2, TargetLogit = st + 4, Argmax = am };
            string? message = null;
            try
            {
                BlockedCrossEntropy.Begin(bs, t, 2, 5);
            }
            catch (ArgumentOutOfRangeException e)
            {
                message = e.Message;
            }
            Assert.Contains("Target 9 at row 1", message);
        }
    }
}
