using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Training;

/// <summary>
/// A one-block Llama-style causal LM built from autograd ops (embedding → RMSNorm → RoPE attention →
/// RMSNorm → SwiGLU MLP → RMSNorm → lm_head), linears in LinearSlots; honours attention masks,
/// segment ids and position ids. Decoding recomputes the whole prefix (no KV cache).
/// </summary>
internal sealed class TinyCausalLM : ICausalLM
{
    public const int Channels = 16, Heads = 2, HeadDim = 8, Hidden = 32, MaxPositions = 128;
    private readonly Parameter _embed, _norm1, _norm2, _normF;
    private readonly RopeCache _rope;
    private readonly List<LinearSlot> _slots = [];

    /// <param name="trainAll">Train every parameter (else only the linears, like an adapter on a frozen base).</param>
    public TinyCausalLM(int vocab, ulong seed, bool trainAll = true)
    {
        Config = new LlamaConfig { VocabSize = vocab, HiddenSize = Channels, LayerCount = 1, HeadCount = Heads, KeyValueHeadCount = Heads, HeadDim = HeadDim, IntermediateSize = Hidden, MaxPositionEmbeddings = MaxPositions };
        var rng = new Rng(seed);
        _embed = Parameter.Create("model.embed_tokens.weight", [vocab, Channels], trainAll);
        rng.FillNormal(_embed.AsSpan(), 0f, 0.5f);
        _norm1 = Ones("model.layers.0.input_layernorm.weight", trainAll);
        _norm2 = Ones("model.layers.0.post_attention_layernorm.weight", trainAll);
        _normF = Ones("model.norm.weight", trainAll);
        foreach (var (name, o, i) in new[] { ("q_proj", Heads * HeadDim, Channels), ("k_proj", Heads * HeadDim, Channels), ("v_proj", Heads * HeadDim, Channels), ("o_proj", Channels, Heads * HeadDim) })
            Add($"model.layers.0.self_attn.{name}", i, o, rng, false);
        foreach (var (name, o, i) in new[] { ("gate_proj", Hidden, Channels), ("up_proj", Hidden, Channels), ("down_proj", Channels, Hidden) })
            Add($"model.layers.0.mlp.{name}", i, o, rng, false);
        Add("lm_head", Channels, vocab, rng, true);
        _rope = RopeCache.Create(10000.0, HeadDim, MaxPositions);
    }

    private static Parameter Ones(string name, bool trainable)
    {
        var p = Parameter.Create(name, [Channels], trainable);
        p.AsSpan().Fill(1f);
        return p;
    }

    private void Add(string name, int inFeatures, int outFeatures, Rng rng, bool output)
    {
        var info = new LinearModuleInfo(name, inFeatures, outFeatures, HasBias: false, IsOutputLayer: output);
        var layer = DenseLinear.Create(info, trainable: true);
        rng.FillKaimingUniform(layer.Weight.AsSpan(), inFeatures);
        _slots.Add(new LinearSlot(info, layer));
    }

    public ModelConfig Config { get; }
    public IReadOnlyList<LinearSlot> Linears => _slots;
    public int Calls { get; private set; }

    public IEnumerable<Parameter> Parameters => new[] { _embed, _norm1, _norm2, _normF }.Concat(_slots.SelectMany(s => s.Layer.Parameters));

    private Tensor Linear(Ops ops, Tensor x, int index) => _slots[index].Layer.Forward(ops, x);

    public Tensor Forward(Ops ops, TokenBatch batch)
    {
        Calls++;
        int b = batch.Batch, t = batch.SeqLen;
        var positions = batch.PositionIds ?? Enumerable.Range(0, b * t).Select(i => i % t).ToArray();
        var x = ops.Embedding(batch.InputIds, _embed);
        var h = ops.RmsNorm(x, _norm1, 1e-6f);
        var q = ops.Rope(Ops.Reshape(Linear(ops, h, 0), b, t, Heads, HeadDim), positions, _rope);
        var k = ops.Rope(Ops.Reshape(Linear(ops, h, 1), b, t, Heads, HeadDim), positions, _rope);
        var v = Ops.Reshape(Linear(ops, h, 2), b, t, Heads, HeadDim);
        var a = Ops.Reshape(ops.Attention(q, k, v, batch.AttentionMask, batch.SegmentIds), b * t, Heads * HeadDim);
        x = ops.Add(x, Linear(ops, a, 3));
        h = ops.RmsNorm(x, _norm2, 1e-6f);
        x = ops.Add(x, Linear(ops, ops.SwiGlu(Linear(ops, h, 4), Linear(ops, h, 5)), 6));
        return Linear(ops, ops.RmsNorm(x, _normF, 1e-6f), 7);
    }

    public Tensor Loss(Ops ops, TokenBatch batch) => ops.CrossEntropy(Forward(ops, batch), batch.ShiftedTargets());

    public IDecodeSession StartDecoding(int batch, int maxTokens) => new Session(this, batch);

    public void Dispose()
    {
        foreach (var p in new[] { _embed, _norm1, _norm2, _normF }) p.Dispose();
        foreach (var s in _slots) s.Layer.Dispose();
        _rope.Dispose();
    }

    /// <summary>Keeps every sequence's tokens and recomputes the forward pass for each append.</summary>
    private sealed class Session(TinyCausalLM model, int batch) : IDecodeSession
    {
        private readonly List<int>[] _tokens = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        private readonly List<int>[] _mask = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        public int VocabSize => model.Config.VocabSize;

        public unsafe void Append(ReadOnlySpan<int> tokens, ReadOnlySpan<int> mask, int count, Span<float> lastLogits)
        {
            for (int r = 0; r < batch; r++)
                for (int i = 0; i < count; i++)
                {
                    _tokens[r].Add(tokens[r * count + i]);
                    _mask[r].Add(mask.IsEmpty ? 1 : mask[r * count + i]);
                }
            int t = _tokens[0].Count;
            var ids = _tokens.SelectMany(x => x).ToArray();
            var m = _mask.SelectMany(x => x).ToArray();
            var positions = new int[batch * t];
            for (int r = 0; r < batch; r++)
                for (int i = 0, p = 0; i < t; i++) positions[r * t + i] = m[r * t + i] == 1 ? p++ : 0;
            using var tape = new Tape { GradEnabled = false, Training = false };
            var logits = model.Forward(new Ops(tape), new TokenBatch(batch, t, ids) { AttentionMask = m, PositionIds = positions });
            int v = logits.Columns;
            for (int r = 0; r < batch; r++)
                new ReadOnlySpan<float>(logits.Data + ((long)r * t + t - 1) * v, v).CopyTo(lastLogits.Slice(r * v, v));
        }

        public void Dispose() { }
    }
}
