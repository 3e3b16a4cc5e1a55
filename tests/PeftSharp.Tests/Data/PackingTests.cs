using PeftSharp.Data;

namespace PeftSharp.Tests.Data;

public class PackingTests
{
    private static TokenizedExample Ex(int length, int start, int promptLength = 0) =>
        new(Enumerable.Range(start, length).ToArray(), Enumerable.Range(0, length).Select(i => i >= promptLength).ToArray());

    [Fact]
    public void BestFitDecreasingPlacesEachExampleInTheTightestRow()
    {
        // Lengths 5, 3, 4, 2, 6 into rows of 8: sorted 6,5,4,3,2 → [6,2], [5,3], [4].
        var examples = new[] { Ex(5, 100), Ex(3, 200), Ex(4, 300), Ex(2, 400), Ex(6, 500) };
        var set = SftDataset.Pack(examples, padId: 0, maxLength: 8);
        Assert.Equal(3, set.Count);
        Assert.Equal([500, 501, 502, 503, 504, 505, 400, 401], set.Rows[0].InputIds);
        Assert.Equal([100, 101, 102, 103, 104, 200, 201, 202], set.Rows[1].InputIds);
        Assert.Equal([300, 301, 302, 303], set.Rows[2].InputIds);
        Assert.Equal([0, 1, 2, 3, 4, 5, 0, 1], set.Rows[0].PositionIds);
        Assert.Equal([0, 0, 0, 0, 0, 0, 1, 1], set.Rows[0].SegmentIds);
        Assert.Equal([500, 501, 502, 503, 504, 505, -100, 401], set.Rows[0].Labels);
        Assert.Equal(20, set.Rows.Sum(r => r.Length));
    }

    [Fact]
    public void PackedBatchCarriesSegmentsPositionsAndMaskedPromptLabels()
    {
        var set = SftDataset.Pack([Ex(3, 10, promptLength: 2), Ex(2, 20)], padId: 7, maxLength: 4);
        var batch = set.Collate([0, 1]);
        Assert.Equal(3, batch.SeqLen);
        Assert.Equal([10, 11, 12, 20, 21, 7], batch.InputIds);
        Assert.Equal([-100, -100, 12, 20, 21, -100], batch.Labels!);
        Assert.Equal([0, 0, 0, 0, 0, -1], batch.SegmentIds!);
        Assert.Equal([1, 1, 1, 1, 1, 0], batch.AttentionMask!);
        Assert.Equal([0, 1, 2, 0, 1, 2], batch.PositionIds!);
    }

    [Fact]
    public void EpochOrderIsADeterministicPermutationPerEpoch()
    {
        var set = SftDataset.FromExamples(Enumerable.Range(0, 50).Select(i => Ex(2, i)).ToList(), 0);
        var a0 = set.EpochOrder(42, 0, true);
        Assert.Equal(a0, set.EpochOrder(42, 0, true));
        Assert.Equal(Enumerable.Range(0, 50), a0.Order());
        Assert.NotEqual(a0, set.EpochOrder(42, 1, true));
        Assert.NotEqual(a0, set.EpochOrder(43, 0, true));
        Assert.Equal(Enumerable.Range(0, 50), set.EpochOrder(42, 0, false));
        // Fisher-Yates by hand with the same generator.
        var rng = SftDataset.EpochRng(42, 0);
        var expected = Enumerable.Range(0, 50).ToArray();
        for (int i = 49; i > 0; i--)
        {
            int j = (int)((rng.NextUInt64() >> 32) * (ulong)(i + 1) >> 32);
            (expected[i], expected[j]) = (expected[j], expected[i]);
        }
        Assert.Equal(expected, a0);
    }
}
