using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// Incremental decoding with a KV cache: per layer K and V (batch, maxTokens, Hkv, D), one mask
/// entry per cached slot (0 = left padding, never attended), and each sequence's count of real
/// tokens, from which positions follow (count − 1, as transformers derives position_ids from the
/// attention mask). Runs without recording (its tape's arena is rewound every step).
/// </summary>
internal sealed unsafe class DecodeSession : IDecodeSession
{
    private readonly CausalLM _model;
    private readonly int _batch, _maxTokens, _kvHeads, _headDim;
    private readonly NativeBuffer<float>[] _keys, _values;
    private readonly int[] _slotMask;     // (B, maxTokens)
    private readonly int[] _realCount;    // (B)
    private readonly NativeBuffer<float> _scores;
    private readonly Tape _tape;
    private readonly Ops _ops;
    private int _length;

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
        _scores = new NativeBuffer<float>((long)batch * model.Config.HeadCount * maxTokens, clear: false);
        _tape = new Tape(1 << 16) { GradEnabled = false, Training = false };
        _ops = new Ops(_tape);
    }

    public int VocabSize => _model.VocabSize;

    /// <summary>Tokens cached so far per sequence (padding included).</summary>
    public int Length => _length;

    public void Append(ReadOnlySpan<int> tokens, ReadOnlySpan<int> mask, int count, Span<float> lastLogits)
    {
        if (count < 1 || tokens.Length != _batch * count)
            throw new ArgumentException($"Append: {tokens.Length} tokens for batch {_batch} × count {count}.");
        if (!mask.IsEmpty && mask.Length != tokens.Length)
            throw new ArgumentException($"Append: the mask has {mask.Length} entries, not {tokens.Length}.");
        if (lastLogits.Length != _batch * VocabSize)
            throw new ArgumentException($"Append: lastLogits holds {lastLogits.Length} floats, not batch × vocab = {_batch * VocabSize}.");
        if (_length + count > _maxTokens)
            throw new PeftSharpException($"The decoding session holds at most {_maxTokens} tokens; {_length} are cached and {count} more were appended.");

        var ids = tokens.ToArray();
        var positions = new int[ids.Length];
        for (int b = 0; b < _batch; b++)
            for (int i = 0; i < count; i++)
            {
                bool real = mask.IsEmpty || mask[b * count + i] != 0;
                _slotMask[b * _maxTokens + _length + i] = real ? 1 : 0;
                positions[b * count + i] = real ? _realCount[b]++ : 1;
            }

        _tape.Reset();
        var hidden = _model.Hidden(_ops, ids, new CachedAttention(this, count, positions));
        int c = hidden.Columns;
        var last = _tape.NewTensor([_batch, c], requiresGrad: false);
        for (int b = 0; b < _batch; b++)
            new ReadOnlySpan<float>(hidden.Data + ((long)b * count + count - 1) * c, c).CopyTo(new Span<float>(last.Data + (long)b * c, c));
        var logits = _model.HeadSlot.Layer.Forward(_ops, last);
        new ReadOnlySpan<float>(logits.Data, _batch * VocabSize).CopyTo(lastLogits);
        _length += count;
        _tape.Reset();
    }

    /// <summary>Stores k, v (B, count, Hkv, D) at slots [length, length + count) and attends each new query over the cache.</summary>
    private Tensor Attend(Ops ops, int layer, int count, Tensor q, Tensor k, Tensor v)
    {
        int heads = q.Shape[2], kvHeads = _kvHeads, d = _headDim, group = heads / kvHeads, maxTokens = _maxTokens, length = _length;
        float* kc = _keys[layer].Pointer, vc = _values[layer].Pointer, scores = _scores.Pointer;
        long row = (long)kvHeads * d;
        for (int b = 0; b < _batch; b++)
            for (int i = 0; i < count; i++)
            {
                long src = ((long)b * count + i) * row, dst = ((long)b * maxTokens + length + i) * row;
                Buffer.MemoryCopy(k.Data + src, kc + dst, row * sizeof(float), row * sizeof(float));
                Buffer.MemoryCopy(v.Data + src, vc + dst, row * sizeof(float), row * sizeof(float));
            }
        var output = ops.Tape.NewTensor(q.Shape, requiresGrad: false);
        if (length == 0 && count > 1)
        {
            // A prefill over an empty cache is plain causal attention over the new tokens: the blocked kernel.
            var mask = new int[_batch * count];
            bool padded = false;
            for (int b = 0; b < _batch; b++)
                for (int i = 0; i < count; i++)
                    padded |= (mask[b * count + i] = _slotMask[b * maxTokens + i]) == 0;
            var lse = ops.Tape.NewTensor([_batch * heads * count], requiresGrad: false);
            fixed (int* pm = mask)
                Kernels.Attention.Forward(q.Data, k.Data, v.Data, padded ? pm : null, null, output.Data, lse.Data, _batch, count, heads, kvHeads, d);
            return output;
        }
        float* qd = q.Data, od = output.Data;
        float scale = 1f / MathF.Sqrt(d);
        int[] slotMask = _slotMask;
        // One decoding step is a few microseconds of work per head: threads only pay off for long caches or many queries.
        if ((long)_batch * heads * count * (length + count) * d < 1 << 18)
            for (int task = 0; task < _batch * heads; task++) AttendHead(task);
        else
            Parallel.For(0, _batch * heads, AttendHead);
        return output;

        void AttendHead(int task)
        {
            int b = task / heads, h = task % heads, kvh = h / group;
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
                    if (slotMask[b * maxTokens + j] == 0) { s[j] = float.NegativeInfinity; continue; }
                    s[j] = Elementwise.Dot(d, qt, kc + ((long)b * maxTokens + j) * row + (long)kvh * d) * scale;
                    max = MathF.Max(max, s[j]);
                }
                if (max == float.NegativeInfinity) continue;
                float sum = 0f;
                for (int j = 0; j <= t; j++)
                {
                    if (s[j] == float.NegativeInfinity) continue;
                    float p = MathF.Exp(s[j] - max);
                    sum += p;
                    Elementwise.Axpy(d, p, vc + ((long)b * maxTokens + j) * row + (long)kvh * d, acc);
                }
                Elementwise.Scale(d, 1f / sum, acc, acc);
            }
        }
    }

    public void Dispose()
    {
        foreach (var buffer in _keys.Concat(_values)) buffer.Dispose();
        _scores.Dispose();
        _tape.Dispose();
    }

    private sealed class CachedAttention(DecodeSession session, int count, int[] positions)
        : AttentionContext(session._batch, count, positions)
    {
        public override Tensor Attend(Ops ops, int layer, Tensor q, Tensor k, Tensor v) => session.Attend(ops, layer, Tokens, q, k, v);
    }
}
