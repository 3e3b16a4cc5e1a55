using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Data;

/// <summary>
/// One training row: token ids, labels (-100 where not in the loss), positions and example index per
/// token. Unpacked rows hold one example (positions 0..n-1, segment 0); packed rows hold several, with
/// positions restarting at 0 and the segment index increasing per example. The first token of every
/// packed example after the first has label -100, so no loss crosses an example boundary (TRL's padding-free collator).
/// The arrays are read, never written: unpacked rows of one length share their positions and segments.
/// </summary>
public sealed record SequenceRow(int[] InputIds, int[] Labels, int[] PositionIds, int[] SegmentIds)
{
    public int Length => InputIds.Length;

    /// <summary>Tokens that are a target of the shifted loss (label at position t ≥ 1 not -100).</summary>
    public int TargetCount
    {
        get
        {
            int n = 0;
            for (int t = 1; t < Labels.Length; t++) if (Labels[t] != Kernels.CrossEntropy.IgnoreIndex) n++;
            return n;
        }
    }
}

/// <summary>A tokenized dataset ready to batch: rows (examples or packed bins), the pad id, and whether rows are packed.</summary>
public sealed class SftDataset
{
    public SftDataset(IReadOnlyList<SequenceRow> rows, int padId, bool packed)
    {
        Rows = rows;
        PadId = padId;
        Packed = packed;
    }

    public IReadOnlyList<SequenceRow> Rows { get; }
    public int PadId { get; }
    public bool Packed { get; }
    public int Count => Rows.Count;

    /// <summary>
    /// One row per example (labels from the loss mask). Rows of the same length share one positions array (0..n-1) and
    /// one segments array (zeros), which nothing writes, so a large dataset holds 8 bytes a token less.
    /// </summary>
    public static SftDataset FromExamples(IReadOnlyList<TokenizedExample> examples, int padId)
    {
        var rows = new SequenceRow[examples.Count];
        var shared = new Dictionary<int, (int[] Positions, int[] Segments)>();
        for (int i = 0; i < examples.Count; i++)
        {
            var e = examples[i];
            var labels = new int[e.Length];
            for (int t = 0; t < e.Length; t++) labels[t] = e.InLoss[t] ? e.InputIds[t] : Kernels.CrossEntropy.IgnoreIndex;
            if (!shared.TryGetValue(e.Length, out var arrays))
                shared[e.Length] = arrays = (Enumerable.Range(0, e.Length).ToArray(), new int[e.Length]);
            rows[i] = new SequenceRow(e.InputIds, labels, arrays.Positions, arrays.Segments);
        }
        return new SftDataset(rows, padId, packed: false);
    }

    /// <summary>
    /// Packs examples (each already at most <paramref name="maxLength"/> tokens) into rows of at most
    /// maxLength tokens by best-fit decreasing, as TRL's "bfd" strategy: examples sorted by length,
    /// longest first (ties keep their order), each placed in the open row with the least room that
    /// still fits it, else a new row. Rows keep their examples in placement order.
    /// </summary>
    public static SftDataset Pack(IReadOnlyList<TokenizedExample> examples, int padId, int maxLength)
    {
        var order = Enumerable.Range(0, examples.Count).OrderByDescending(i => examples[i].Length).ThenBy(i => i).ToArray();
        var bins = new List<List<int>>();
        var used = new List<int>();
        // Free room → bins with that much room, for the best-fit search.
        var byRoom = new SortedDictionary<int, SortedSet<int>>();
        foreach (int i in order)
        {
            int length = Math.Min(examples[i].Length, maxLength);
            if (length == 0) continue;
            int bin = -1;
            foreach (var (room, set) in byRoom)
                if (room >= length) { bin = set.Min; break; }
            if (bin < 0)
            {
                bin = bins.Count;
                bins.Add([]);
                used.Add(0);
            }
            else Remove(byRoom, maxLength - used[bin], bin);
            bins[bin].Add(i);
            used[bin] += length;
            int left = maxLength - used[bin];
            if (left > 0)
            {
                if (!byRoom.TryGetValue(left, out var s)) byRoom[left] = s = [];
                s.Add(bin);
            }
        }
        var rows = new SequenceRow[bins.Count];
        for (int b = 0; b < bins.Count; b++)
        {
            int n = used[b];
            var ids = new int[n];
            var labels = new int[n];
            var positions = new int[n];
            var segments = new int[n];
            int o = 0;
            for (int s = 0; s < bins[b].Count; s++)
            {
                var e = examples[bins[b][s]];
                int length = Math.Min(e.Length, maxLength);
                for (int t = 0; t < length; t++, o++)
                {
                    ids[o] = e.InputIds[t];
                    labels[o] = e.InLoss[t] && !(t == 0 && s > 0) ? e.InputIds[t] : Kernels.CrossEntropy.IgnoreIndex;
                    positions[o] = t;
                    segments[o] = s;
                }
            }
            rows[b] = new SequenceRow(ids, labels, positions, segments);
        }
        return new SftDataset(rows, padId, packed: true);
    }

    /// <summary>
    /// TRL's "wrapped" packing: the examples end to end in their order, cut into rows of <paramref name="maxLength"/>
    /// tokens (the last may be shorter), an example split across rows where a row ends; examples are not truncated
    /// first. Unlike TRL's, attention still stays within each example: every piece is its own segment, with positions
    /// from 0 within the piece.
    /// </summary>
    public static SftDataset PackWrapped(IReadOnlyList<TokenizedExample> examples, int padId, int maxLength)
    {
        long total = examples.Sum(e => (long)e.Length);
        var rows = new List<SequenceRow>();
        int n = (int)Math.Min(maxLength, total), o = 0, segment = 0, pieceStart = 0;
        var ids = new int[n];
        var labels = new int[n];
        var positions = new int[n];
        var segments = new int[n];
        long left = total;
        foreach (var e in examples)
        {
            for (int t = 0; t < e.Length; t++)
            {
                if (o == ids.Length)
                {
                    rows.Add(new SequenceRow(ids, labels, positions, segments));
                    left -= o;
                    n = (int)Math.Min(maxLength, left);
                    (ids, labels, positions, segments) = (new int[n], new int[n], new int[n], new int[n]);
                    o = 0;
                    segment = 0;
                }
                if (t == 0 && o > 0)
                {
                    segment++;
                    pieceStart = o;
                }
                if (o == 0) pieceStart = 0;
                ids[o] = e.InputIds[t];
                labels[o] = e.InLoss[t] && !(t == 0 && o > 0) ? e.InputIds[t] : Kernels.CrossEntropy.IgnoreIndex;
                positions[o] = o - pieceStart;
                segments[o] = segment;
                o++;
            }
        }
        if (o > 0) rows.Add(new SequenceRow(ids, labels, positions, segments));
        return new SftDataset(rows, padId, packed: true);
    }

    /// <summary>
    /// SFTConfig.padding_free: <see cref="Collate"/> puts a batch's sequences end to end in one row (each row's packed
    /// examples keep their own segments) instead of padding them to the longest; the loss is the same.
    /// </summary>
    public bool PaddingFree { get; set; }

    private static void Remove(SortedDictionary<int, SortedSet<int>> byRoom, int room, int bin)
    {
        var set = byRoom[room];
        set.Remove(bin);
        if (set.Count == 0) byRoom.Remove(room);
    }

    /// <summary>
    /// The order of rows in an epoch: 0..n-1, or with <paramref name="shuffle"/> a Fisher-Yates shuffle
    /// (i from n-1 down to 1, swap with j = NextInt(i+1)) driven by <see cref="EpochRng"/>.
    /// </summary>
    public int[] EpochOrder(int seed, int epoch, bool shuffle)
    {
        var order = Enumerable.Range(0, Count).ToArray();
        if (shuffle) Shuffle(order, EpochRng(seed, epoch));
        return order;
    }

    /// <summary>The generator of an epoch's shuffle: xoshiro256** seeded with (seed &lt;&lt; 32) | epoch, so it needs no saved state.</summary>
    public static Rng EpochRng(int seed, int epoch) => new(((ulong)(uint)seed << 32) | (uint)epoch);

    public static void Shuffle(int[] order, Rng rng)
    {
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = rng.NextInt(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
    }

    /// <summary>
    /// Right-pads the rows <paramref name="indices"/> to the longest into a <see cref="TokenBatch"/>:
    /// pad id in InputIds, 0 in AttentionMask, -100 in Labels; positions continue after the real
    /// tokens (they are never attended); SegmentIds only for packed rows (padding gets segment -1).
    /// </summary>
    public TokenBatch Collate(ReadOnlySpan<int> indices)
    {
        if (PaddingFree) return CollatePaddingFree(indices);
        int batch = indices.Length, seqLen = 1;
        foreach (int i in indices) seqLen = Math.Max(seqLen, Rows[i].Length);
        var ids = new int[batch * seqLen];
        var mask = new int[batch * seqLen];
        var labels = new int[batch * seqLen];
        var positions = new int[batch * seqLen];
        var segments = Packed ? new int[batch * seqLen] : null;
        for (int b = 0; b < batch; b++)
        {
            var row = Rows[indices[b]];
            int o = b * seqLen;
            for (int t = 0; t < seqLen; t++)
            {
                bool real = t < row.Length;
                ids[o + t] = real ? row.InputIds[t] : PadId;
                mask[o + t] = real ? 1 : 0;
                labels[o + t] = real ? row.Labels[t] : Kernels.CrossEntropy.IgnoreIndex;
                positions[o + t] = real ? row.PositionIds[t] : t;
                if (segments != null) segments[o + t] = real ? row.SegmentIds[t] : -1;
            }
        }
        return new TokenBatch(batch, seqLen, ids)
        {
            AttentionMask = mask,
            Labels = labels,
            PositionIds = positions,
            SegmentIds = segments,
        };
    }

    private TokenBatch CollatePaddingFree(ReadOnlySpan<int> indices)
    {
        int total = 0;
        foreach (int i in indices) total += Rows[i].Length;
        var ids = new int[total];
        var labels = new int[total];
        var positions = new int[total];
        var segments = new int[total];
        int o = 0, segmentBase = 0;
        foreach (int i in indices)
        {
            var row = Rows[i];
            int rowSegments = 0;
            for (int t = 0; t < row.Length; t++, o++)
            {
                ids[o] = row.InputIds[t];
                // The first token of a sequence is no target of the one before it.
                labels[o] = t == 0 ? Kernels.CrossEntropy.IgnoreIndex : row.Labels[t];
                positions[o] = row.PositionIds[t];
                int s = Packed ? row.SegmentIds[t] : 0;
                segments[o] = segmentBase + s;
                rowSegments = Math.Max(rowSegments, s + 1);
            }
            segmentBase += rowSegments;
        }
        return new TokenBatch(1, total, ids) { Labels = labels, PositionIds = positions, SegmentIds = segments };
    }

    /// <summary>Targets of the shifted loss in a batch (labels at t ≥ 1 of each row that are not -100).</summary>
    public static int TargetCount(TokenBatch batch)
    {
        if (batch.Labels == null) return batch.Batch * (batch.SeqLen - 1);
        int n = 0;
        for (int b = 0; b < batch.Batch; b++)
            for (int t = 1; t < batch.SeqLen; t++)
                if (batch.Labels[b * batch.SeqLen + t] != Kernels.CrossEntropy.IgnoreIndex) n++;
        return n;
    }
}
