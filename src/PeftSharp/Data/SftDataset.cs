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

/// <summary>
/// A tokenized dataset ready to batch: rows (examples or packed bins), the pad id, and whether rows are packed. Built from a
/// <see cref="TokenStore"/> (<see cref="FromExamples"/>, <see cref="Pack"/>, <see cref="PackWrapped"/>), a row is made from the
/// store when it is read (its arrays are the row's own copy), so rows of a memory-mapped store are never all held as arrays;
/// what is computed over all rows (BFD's bins, the counts) uses the store's offsets and summary only.
/// </summary>
public sealed class SftDataset
{
    private readonly Func<(long Tokens, long LossTokens)>? _totals;
    private readonly TokenStore? _store;

    public SftDataset(IReadOnlyList<SequenceRow> rows, int padId, bool packed)
    {
        Rows = rows;
        PadId = padId;
        Packed = packed;
    }

    /// <param name="totals">The totals without reading the rows; null when the rows do not hold every token of the store (examples cut by packing), which also reads the rows for <see cref="MaxTokenId"/>.</param>
    private SftDataset(int count, Func<int, SequenceRow> row, TokenStore store, int padId, bool packed, Func<(long, long)>? totals)
        : this(new RowList(count, row), padId, packed)
    {
        _store = totals != null ? store : null;
        _totals = totals;
    }

    public IReadOnlyList<SequenceRow> Rows { get; }
    public int PadId { get; }
    public bool Packed { get; }
    public int Count => Rows.Count;

    /// <summary>The tokens of all rows and those that are targets of the shifted loss (<see cref="SequenceRow.TargetCount"/>, summed).</summary>
    public (long Tokens, long LossTokens) Totals()
    {
        if (_totals != null) return _totals();
        long tokens = 0, loss = 0;
        foreach (var row in Rows)
        {
            tokens += row.Length;
            loss += row.TargetCount;
        }
        return (tokens, loss);
    }

    /// <summary>The largest token id in any row (-1 when there is none).</summary>
    public int MaxTokenId()
    {
        if (_store != null) return _store.Summary.MaxTokenId;
        int max = -1;
        foreach (var row in Rows)
            foreach (int id in row.InputIds) max = Math.Max(max, id);
        return max;
    }

    private static TokenStore Store(IReadOnlyList<TokenizedExample> examples) => examples as TokenStore ?? TokenStore.FromExamples(examples);

    /// <summary>One row per example (labels from the loss mask; positions 0..n-1, segment 0).</summary>
    public static SftDataset FromExamples(IReadOnlyList<TokenizedExample> examples, int padId)
    {
        var store = Store(examples);
        return new SftDataset(store.Count, i =>
        {
            var ids = store.Ids(i).ToArray();
            var mask = store.Mask(i);
            var labels = new int[ids.Length];
            for (int t = 0; t < ids.Length; t++) labels[t] = mask[t] != 0 ? ids[t] : Kernels.CrossEntropy.IgnoreIndex;
            var positions = new int[ids.Length];
            for (int t = 0; t < positions.Length; t++) positions[t] = t;
            return new SequenceRow(ids, labels, positions, new int[ids.Length]);
        }, store, padId, packed: false, () => (store.Tokens, store.Summary.LossTokens));
    }

    /// <summary>
    /// Packs examples into rows of at most <paramref name="maxLength"/> tokens (a longer example is cut to maxLength) by
    /// best-fit decreasing, as TRL's "bfd" strategy: examples sorted by length, longest first (ties keep their order), each
    /// placed in the open row with the least room that still fits it (the lowest such row), else a new row. Rows keep their
    /// examples in placement order. The bins are computed from the example lengths alone.
    /// </summary>
    public static SftDataset Pack(IReadOnlyList<TokenizedExample> examples, int padId, int maxLength)
    {
        var store = Store(examples);
        int n = store.Count;
        // Longest first, ties by index: one sort of (maxLength - length, index) keys.
        var keys = new ulong[n];
        for (int i = 0; i < n; i++) keys[i] = ((ulong)(uint)(int.MaxValue - store.Length(i)) << 32) | (uint)i;
        Array.Sort(keys);
        var binOf = new int[n];
        var used = new List<int>();
        // Free room → bins with that much room; the rooms that have bins, for the best-fit search.
        var byRoom = new Dictionary<int, SortedSet<int>>();
        var rooms = new SortedSet<int>();
        foreach (ulong key in keys)
        {
            int i = (int)(uint)key;
            int length = Math.Min(store.Length(i), maxLength);
            binOf[i] = -1;
            if (length == 0) continue;
            int bin = -1;
            var fitting = rooms.GetViewBetween(length, int.MaxValue);
            if (fitting.Count > 0)
            {
                int room = fitting.Min;
                var set = byRoom[room];
                bin = set.Min;
                set.Remove(bin);
                if (set.Count == 0) { byRoom.Remove(room); rooms.Remove(room); }
            }
            else
            {
                bin = used.Count;
                used.Add(0);
            }
            binOf[i] = bin;
            used[bin] += length;
            int left = maxLength - used[bin];
            if (left > 0)
            {
                if (!byRoom.TryGetValue(left, out var s)) { byRoom[left] = s = []; rooms.Add(left); }
                s.Add(bin);
            }
        }
        // Each bin's examples in placement order (the sorted order), as one flat array with a start per bin.
        int bins = used.Count;
        var start = new int[bins + 1];
        foreach (ulong key in keys) if (binOf[(int)(uint)key] is int b and >= 0) start[b + 1]++;
        for (int b = 0; b < bins; b++) start[b + 1] += start[b];
        var members = new int[start[bins]];
        var fill = start[..bins];
        foreach (ulong key in keys) if (binOf[(int)(uint)key] is int b and >= 0) members[fill[b]++] = (int)(uint)key;
        var usedArray = used.ToArray();
        return new SftDataset(bins, b =>
        {
            int total = usedArray[b];
            var ids = new int[total];
            var labels = new int[total];
            var positions = new int[total];
            var segments = new int[total];
            int o = 0;
            for (int s = 0; s < start[b + 1] - start[b]; s++)
            {
                int e = members[start[b] + s];
                var eIds = store.Ids(e);
                var mask = store.Mask(e);
                int length = Math.Min(eIds.Length, maxLength);
                for (int t = 0; t < length; t++, o++)
                {
                    ids[o] = eIds[t];
                    labels[o] = mask[t] != 0 && !(t == 0 && s > 0) ? eIds[t] : Kernels.CrossEntropy.IgnoreIndex;
                    positions[o] = t;
                    segments[o] = s;
                }
            }
            return new SequenceRow(ids, labels, positions, segments);
        }, store, padId, packed: true, store.Summary.LongestExample <= maxLength ? () => (store.Tokens, store.Summary.LossTokens) : null);
    }

    /// <summary>
    /// TRL's "wrapped" packing: the examples end to end in their order, cut into rows of <paramref name="maxLength"/>
    /// tokens (the last may be shorter), an example split across rows where a row ends; examples are not truncated
    /// first. Unlike TRL's, attention still stays within each example: every piece is its own segment, with positions
    /// from 0 within the piece. Row r is the tokens r·maxLength … (r+1)·maxLength − 1 of the store.
    /// </summary>
    public static SftDataset PackWrapped(IReadOnlyList<TokenizedExample> examples, int padId, int maxLength)
    {
        var store = Store(examples);
        long total = store.Tokens;
        int rowCount = checked((int)((total + maxLength - 1) / maxLength));
        return new SftDataset(rowCount, r =>
        {
            long first = (long)r * maxLength;
            int n = (int)Math.Min(maxLength, total - first);
            var ids = new int[n];
            var labels = new int[n];
            var positions = new int[n];
            var segments = new int[n];
            int e = ExampleAt(store, first), segment = 0, pieceStart = 0;
            int t = (int)(first - store.Offset(e));
            for (int o = 0; o < n; e++, t = 0)
            {
                var eIds = store.Ids(e);
                var mask = store.Mask(e);
                for (; t < eIds.Length && o < n; t++, o++)
                {
                    if (t == 0 && o > 0)
                    {
                        segment++;
                        pieceStart = o;
                    }
                    ids[o] = eIds[t];
                    labels[o] = mask[t] != 0 && !(t == 0 && o > 0) ? eIds[t] : Kernels.CrossEntropy.IgnoreIndex;
                    positions[o] = o - pieceStart;
                    segments[o] = segment;
                }
            }
            return new SequenceRow(ids, labels, positions, segments);
        }, store, padId, packed: true, () =>
        {
            // Every token after a row's start that is in the loss of an unpacked example, less those a row starts with.
            long loss = store.Summary.LossTokens;
            for (long p = maxLength; p < total; p += maxLength)
            {
                int e = ExampleAt(store, p);
                int t = (int)(p - store.Offset(e));
                if (t > 0 && store.Mask(e)[t] != 0) loss--;
            }
            return (total, loss);
        });
    }

    /// <summary>The example holding token <paramref name="position"/> (an empty example never does).</summary>
    private static int ExampleAt(TokenStore store, long position)
    {
        int lo = 0, hi = store.Count - 1;
        // The last example whose first token is at or before the position; empty ones before it share its offset and are skipped.
        while (lo < hi)
        {
            int mid = (lo + hi + 1) >>> 1;
            if (store.Offset(mid) <= position) lo = mid;
            else hi = mid - 1;
        }
        return lo;
    }

    private sealed class RowList(int count, Func<int, SequenceRow> row) : IReadOnlyList<SequenceRow>
    {
        public int Count => count;
        public SequenceRow this[int index] => (uint)index < (uint)count ? row(index) : throw new ArgumentOutOfRangeException(nameof(index));

        public IEnumerator<SequenceRow> GetEnumerator()
        {
            for (int i = 0; i < count; i++) yield return row(i);
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>
    /// SFTConfig.padding_free: <see cref="Collate"/> puts a batch's sequences end to end in one row (each row's packed
    /// examples keep their own segments) instead of padding them to the longest; the loss is the same.
    /// </summary>
    public bool PaddingFree { get; set; }

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
        var rows = RowsAt(indices);
        int batch = indices.Length, seqLen = 1;
        foreach (var row in rows) seqLen = Math.Max(seqLen, row.Length);
        var ids = new int[batch * seqLen];
        var mask = new int[batch * seqLen];
        var labels = new int[batch * seqLen];
        var positions = new int[batch * seqLen];
        var segments = Packed ? new int[batch * seqLen] : null;
        for (int b = 0; b < batch; b++)
        {
            var row = rows[b];
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

    /// <summary>The rows of a batch, each read once.</summary>
    private SequenceRow[] RowsAt(ReadOnlySpan<int> indices)
    {
        var rows = new SequenceRow[indices.Length];
        for (int b = 0; b < rows.Length; b++) rows[b] = Rows[indices[b]];
        return rows;
    }

    private TokenBatch CollatePaddingFree(ReadOnlySpan<int> indices)
    {
        var rows = RowsAt(indices);
        int total = 0;
        foreach (var row in rows) total += row.Length;
        var ids = new int[total];
        var labels = new int[total];
        var positions = new int[total];
        var segments = new int[total];
        int o = 0, segmentBase = 0;
        foreach (var row in rows)
        {
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
