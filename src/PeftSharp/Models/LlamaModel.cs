using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// The Llama family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM): RMSNorm, rotary
/// positions (rope_theta, llama3/linear rope_scaling), grouped-query attention, SwiGLU MLP,
/// optional q/k/v (Qwen2) and o/MLP biases, tied or untied embeddings. A sliding window is
/// refused for sequences longer than it (shorter ones never reach it).
/// </summary>
public sealed class LlamaModel : CausalLM
{
    private const int Q = 0, K = 1, V = 2, O = 3, Gate = 4, Up = 5, Down = 6;
    private readonly LlamaConfig _config;
    private readonly EmbeddingTable _embed;
    private readonly Parameter[] _inputNorm, _postNorm;
    private readonly Parameter _norm;
    private readonly RopeCache _rope;

    internal LlamaModel(LlamaConfig config, WeightSource weights) : base(config, weights, linearsPerLayer: 7)
    {
        if (config.HiddenAct != "silu")
            throw new PeftSharpException($"{config.SourcePath ?? ModelConfig.FileName}: hidden_act '{config.HiddenAct}' is not supported (silu).");
        _config = config;
        int h = config.HiddenSize, n = config.LayerCount;
        _embed = LoadEmbedding("model.embed_tokens.weight", config.VocabSize, h);
        (_inputNorm, _postNorm) = (new Parameter[n], new Parameter[n]);
        for (int i = 0; i < n; i++)
        {
            _inputNorm[i] = Norm($"model.layers.{i}.input_layernorm.weight", h, WeightInit.Ones);
            _postNorm[i] = Norm($"model.layers.{i}.post_attention_layernorm.weight", h, WeightInit.Ones);
        }
        _norm = Norm("model.norm.weight", h, WeightInit.Ones);
        BuildLinears(config.TieWordEmbeddings ? _embed : null);
        _rope = new RopeCache(config.ComputeInverseFrequencies(), config.MaxPositionEmbeddings);
    }

    internal override int KeyValueHeads => _config.KeyValueHeadCount;
    internal override int HeadDim => _config.HeadDim;
    private float Eps => (float)_config.RmsNormEps;

    private protected override Tensor Embed(Ops ops, int[] ids, int[] positions) => _embed.Lookup(ops, ids);

    private protected override Tensor Block(Ops ops, int layer, Tensor h, AttentionContext context)
    {
        int heads = _config.HeadCount, kvHeads = _config.KeyValueHeadCount, d = _config.HeadDim, b = context.Batch, t = context.Tokens;
        var x = ops.RmsNorm(h, _inputNorm[layer], Eps);
        var q = ops.Rope(Ops.Reshape(LayerSlot(layer, Q).Layer.Forward(ops, x), b, t, heads, d), context.Positions, _rope);
        var k = ops.Rope(Ops.Reshape(LayerSlot(layer, K).Layer.Forward(ops, x), b, t, kvHeads, d), context.Positions, _rope);
        var v = Ops.Reshape(LayerSlot(layer, V).Layer.Forward(ops, x), b, t, kvHeads, d);
        var o = context.Attend(ops, layer, q, k, v);
        h = ops.Add(h, LayerSlot(layer, O).Layer.Forward(ops, Ops.Reshape(o, b * t, heads * d)));
        x = ops.RmsNorm(h, _postNorm[layer], Eps);
        var m = ops.SwiGlu(LayerSlot(layer, Gate).Layer.Forward(ops, x), LayerSlot(layer, Up).Layer.Forward(ops, x));
        Tensor down;
        using (ops.Tape.UnreadOutput()) down = LayerSlot(layer, Down).Layer.Forward(ops, m);
        return ops.Add(h, down);
    }

    private protected override Tensor FinalNorm(Ops ops, Tensor h) => ops.RmsNorm(h, _norm, Eps);

    private protected override void CheckSequenceLength(int tokens)
    {
        base.CheckSequenceLength(tokens);
        if (_config.EffectiveSlidingWindow is int window && tokens > window)
            throw new PeftSharpException($"A sequence of {tokens} tokens exceeds the sliding window of {window} (sliding_window); sliding-window attention is not implemented, use sequences of at most {window} tokens.");
    }

    private protected override void DisposeExtra() => _rope.Dispose();
}
