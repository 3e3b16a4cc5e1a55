using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// Incremental decoding with a KV cache: per layer K and V (batch, maxTokens, Hkv, D), one mask entry per cached
/// slot (0 = left padding, never attended), and each row's own cached length and count of real tokens, from which
/// positions follow (count − 1, as transformers derives position_ids from the attention mask). Runs without
/// recording (its tape's arena is rewound every step). Everything mutable (cache, scores, tape, layer-output
/// scratch) belongs to the session, so sessions on one model may run on different threads at once.
/// <para>
/// <see cref="Append"/> advances every row together; <see cref="AppendRows"/> advances only some rows, each at its
/// own length, each with its own adapter: rows of a continuous batch join (prefill into a free row) and leave
/// (<see cref="ResetRow"/>) between steps.
/// </para>
/// </summary>
internal sealed unsafe class DecodeSession : IBatchDecodeSession
{
    private readonly CausalLM _model;
    private readonly int _batch, _maxTokens, _kvHeads, _headDim;
    private readonly NativeBuffer<float>[] _keys, _values;
    private readonly int[] _slotMask;     // (B, maxTokens)
    private readonly int[] _realCount;    // (B)
    private readonly int[] _lengths;      // (B) cached slots per row, padding included
    private readonly NativeBuffer<float> _scores;
    private readonly Tape _tape;
    private readonly Ops _ops;
    private readonly LayerOutputScratch _scratch = new();
    private readonly int[] _allRows;

    public DecodeSession(CausalLM model, int batch, int maxTokens)
    {
        _model = model;
        _batch = batch;
        _maxTokens = maxTokens;
        _kvHeads = model.KeyValueHeads;
        _headDim = model.HeadDim;
        long cache = (long)batch * maxTokens * _kvHeads * _headDim;
        _keys = new NativeBuffer<float>[model.LayerCount];
        _values = new NativeBuffer<float>[model.LayerCount];
        for (int i = 0; i < model.LayerCount; i++)
        {
            _keys[i] = new NativeBuffer<float>(cache, clear: false);
            _values[i] = new NativeBuffer<float>(cache, clear: false);
        }
        _slotMask = new int[batch * maxTokens];
        _realCount = new int[batch];
        _lengths = new int[batch];
        _scores = new NativeBuffer<float>((long)batch * model.Config.HeadCount * maxTokens, clear: false);
        _tape = new Tape(1 << 16) { GradEnabled = false, Training = false };
        _ops = new Ops(_tape) { Float32Products = true };
        _allRows = Enumerable.Range(0, batch).ToArray();
    }

    /// <summary>Bytes the session holds at its peak so far: the KV cache, the attention scores, the kept layer outputs and its arena's high-water mark (the planner's measure).</summary>
    internal long PeakBytes => 4 * (_keys.Sum(k => k.Length) + _values.Sum(v => v.Length) + _scores.Length + _scratch.Length + _tape.Arena.HighWater);

    public int VocabSize => _model.VocabSize;
    public int Rows => _batch;
    public int MaxTokens => _maxTokens;

    /// <summary>Tokens cached so far per sequence (padding included), when all rows advance together.</summary>
    public int Length => _lengths[0];

    public int RowLength(int row) => _lengths[row];

    public void ResetRow(int row)
    {
        _lengths[row] = 0;
        _realCount[row] = 0;
    }

    public void Append(ReadOnlySpan<int> tokens, ReadOnlySpan<int> mask, int count, Span<float> lastLogits)
    {
        if (count < 1 || tokens.Length != _batch * count)
            throw new ArgumentException($"Append: {tokens.Length} tokens for batch {_batch} × count {count}.");
        if (!mask.IsEmpty && mask.Length != tokens.Length)
            throw new ArgumentException($"Append: the mask has {mask.Length} entries, not {tokens.Length}.");
        if (lastLogits.Length != _batch * VocabSize)
            throw new ArgumentException($"Append: lastLogits holds {lastLogits.Length} floats, not batch × vocab = {_batch * VocabSize}.");
        Run(_allRows, tokens, mask, count, null, lastLogits);
    }

    public void AppendRows(ReadOnlySpan<int> rows, ReadOnlySpan<int> tokens, int count, IReadOnlyList<string?>? adapters, Span<float> lastLogits)
    {
        int n = rows.Length;
        if (n < 1 || count < 1 || tokens.Length != n * count)
            throw new ArgumentException($"AppendRows: {tokens.Length} tokens for {n} rows × count {count}.");
        if (lastLogits.Length != n * VocabSize)
            throw new ArgumentException($"AppendRows: lastLogits holds {lastLogits.Length} floats, not rows × vocab = {n * VocabSize}.");
        if (adapters != null && adapters.Count != n)
            throw new ArgumentException($"AppendRows: {adapters.Count} adapters for {n} rows.");
        var seen = new HashSet<int>();
        foreach (int r in rows)
            if ((uint)r >= (uint)_batch || !seen.Add(r)) throw new ArgumentException($"AppendRows: row {r} is out of range or repeated.");
        Run(rows.ToArray(), tokens, [], count, adapters, lastLogits);
    }

    private void Run(int[] rows, ReadOnlySpan<int> tokens, ReadOnlySpan<int> mask, int count, IReadOnlyList<string?>? adapters, Span<float> lastLogits)
    {
        int n = rows.Length;
        foreach (int r in rows)
            if (_lengths[r] + count > _maxTokens)
                throw new PeftSharpException($"The decoding session holds at most {_maxTokens} tokens; {_lengths[r]} are cached and {count} more were appended.");

        var ids = tokens.ToArray();
        var positions = new int[ids.Length];
        for (int b = 0; b < n; b++)
        {
            int row = rows[b];
            for (int i = 0; i < count; i++)
            {
                bool real = mask.IsEmpty || mask[b * count + i] != 0;
                _slotMask[row * _maxTokens + _lengths[row] + i] = real ? 1 : 0;
                positions[b * count + i] = real ? _realCount[row]++ : 1;
            }
        }

        _tape.Reset();
        try
        {
            if (adapters != null)
            {
                var perToken = new string?[n * count];
                for (int b = 0; b < n; b++) perToken.AsSpan(b * count, count).Fill(adapters[b]);
                _ops.RowAdapters = perToken;
            }
            var hidden = _model.Hidden(_ops, ids, new CachedAttention(this, rows, count, positions) { Scratch = _scratch });
            int c = hidden.Columns;
            var last = _tape.NewTensor([n, c], requiresGrad: false);
            for (int b = 0; b < n; b++)
                new ReadOnlySpan<float>(hidden.Data + ((long)b * count + count - 1) * c, c).CopyTo(new Span<float>(last.Data + (long)b * c, c));
            if (adapters != null) _ops.RowAdapters = adapters.ToArray();
            var logits = _model.HeadSlot.Layer.Forward(_ops, last);
            new ReadOnlySpan<float>(logits.Data, n * VocabSize).CopyTo(lastLogits);
            foreach (int r in rows) _lengths[r] += count;
        }
        finally
        {
            _ops.RowAdapters = null;
            _tape.Reset();
        }
    }

    /// <summary>Stores k, v (n, count, Hkv, D) at each row's slots [length, length + count) and attends each new query over its row's cache.</summary>
    private Tensor Attend(Ops ops, int layer, int[] rows, int count, Tensor q, Tensor k, Tensor v)
    {
        int n = rows.Length;
        int heads = q.Shape[2], kvHeads = _kvHeads, d = _headDim, group = heads / kvHeads, maxTokens = _maxTokens;
        float* kc = _keys[layer].Pointer, vc = _values[layer].Pointer, scores = _scores.Pointer;
        long row = (long)kvHeads * d;
        int[] lengths = _lengths;
        bool emptyCache = true;
        for (int b = 0; b < n; b++)
        {
            int slot = rows[b], length = lengths[slot];
            emptyCache &= length == 0;
            for (int i = 0; i < count; i++)
            {
                long src = ((long)b * count + i) * row, dst = ((long)slot * maxTokens + length + i) * row;
                Buffer.MemoryCopy(k.Data + src, kc + dst, row * sizeof(float), row * sizeof(float));
                Buffer.MemoryCopy(v.Data + src, vc + dst, row * sizeof(float), row * sizeof(float));
            }
        }
        var output = ops.Tape.NewTensor(q.Shape, requiresGrad: false);
        if (emptyCache && count > 1)
        {
            // A prefill over an empty cache is plain causal attention over the new tokens: the blocked kernel.
            var mask = new int[n * count];
            bool padded = false;
            for (int b = 0; b < n; b++)
                for (int i = 0; i < count; i++)
                    padded |= (mask[b * count + i] = _slotMask[rows[b] * maxTokens + i]) == 0;
            var lse = ops.Tape.NewTensor([n * heads * count], requiresGrad: false);
            fixed (int* pm = mask)
                Kernels.Attention.Forward(q.Data, k.Data, v.Data, padded ? pm : null, null, output.Data, lse.Data, n, count, heads, kvHeads, d);
            return output;
        }
        float* qd = q.Data, od = output.Data;
        float scale = 1f / MathF.Sqrt(d);
        int[] slotMask = _slotMask;
        long work = 0;
        for (int b = 0; b < n; b++) work += (long)heads * count * (lengths[rows[b]] + count) * d;
        // One decoding step is a few microseconds of work per head: threads only pay off for long caches or many queries.
        if (work < 1 << 18)
            for (int task = 0; task < n * heads; task++) AttendHead(task);
        else
            Parallel.For(0, n * heads, AttendHead);
        return output;

        void AttendHead(int task)
        {
            int b = task / heads, h = task % heads, kvh = h / group, slot = rows[b], length = lengths[slot];
            float* s = scores + (long)task * maxTokens;
            for (int i = 0; i < count; i++)
            {
                int t = length + i;
                float* qt = qd + (((long)b * count + i) * heads + h) * d;
                float* acc = od + (((long)b * count + i) * heads + h) * d;
                new Span<float>(acc, d).Clear();
                float max = float.NegativeInfinity;
                for (int j = 0; j <= t; j++)
                {
                    if (slotMask[slot * maxTokens + j] == 0) { s[j] = float.NegativeInfinity; continue; }
                    s[j] = Elementwise.Dot(d, qt, kc + ((long)slot * maxTokens + j) * row + (long)kvh * d) * scale;
                    max = MathF.Max(max, s[j]);
                }
                if (max == float.NegativeInfinity) continue;
                float sum = 0f;
                for (int j = 0; j <= t; j++)
                {
                    if (s[j] == float.NegativeInfinity) continue;
                    float p = MathF.Exp(s[j] - max);
                    sum += p;
                    Elementwise.Axpy(d, p, vc + ((long)slot * maxTokens + j) * row + (long)kvh * d, acc);
                }
                Elementwise.Scale(d, 1f / sum, acc, acc);
            }
        }
    }

    public void Dispose()
    {
        foreach (var buffer in _keys.Concat(_values)) buffer.Dispose();
        _scores.Dispose();
        _scratch.Dispose();
        _tape.Dispose();
    }

    private sealed class CachedAttention(DecodeSession session, int[] rows, int count, int[] positions)
        : AttentionContext(rows.Length, count, positions)
    {
        public override Tensor Attend(Ops ops, int layer, Tensor q, Tensor k, Tensor v) => session.Attend(ops, layer, rows, Tokens, q, k, v);
    }
}
