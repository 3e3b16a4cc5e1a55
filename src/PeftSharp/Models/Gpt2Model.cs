using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// GPT-2 (GPT2LMHeadModel): learned positions, pre-LayerNorm blocks, fused c_attn, gelu_new MLP,
/// Conv1D weights (stored [in, out], held [out, in]) and lm_head tied to wte. Dropout is not
/// applied (LoRA dropout lives in the LoRA layers).
/// </summary>
public sealed class Gpt2Model : CausalLM
{
    private const int CAttn = 0, AttnProj = 1, Fc = 2, MlpProj = 3;
    private readonly Gpt2Config _config;
    private readonly EmbeddingTable _wte;
    private readonly Parameter _wpe;
    private readonly Parameter[] _ln1W, _ln1B, _ln2W, _ln2B;
    private readonly Parameter _lnFW, _lnFB;

    internal Gpt2Model(Gpt2Config config, WeightSource weights) : base(config, weights, linearsPerLayer: 4)
    {
        if (config.ActivationFunction is not ("gelu_new" or "gelu_pytorch_tanh"))
            throw new PeftSharpException($"{config.SourcePath ?? ModelConfig.FileName}: activation_function '{config.ActivationFunction}' is not supported (gelu_new, gelu_pytorch_tanh).");
        _config = config;
        int e = config.HiddenSize;
        _wte = LoadEmbedding("transformer.wte.weight", config.VocabSize, e);
        _wpe = Own(weights.Dense("transformer.wpe.weight", [config.MaxPositionEmbeddings, e], WeightInit.Normal));
        int n = config.LayerCount;
        (_ln1W, _ln1B, _ln2W, _ln2B) = (new Parameter[n], new Parameter[n], new Parameter[n], new Parameter[n]);
        for (int i = 0; i < n; i++)
        {
            string p = $"transformer.h.{i}.";
            _ln1W[i] = Norm(p + "ln_1.weight", e, WeightInit.Ones);
            _ln1B[i] = Norm(p + "ln_1.bias", e, WeightInit.Zeros);
            _ln2W[i] = Norm(p + "ln_2.weight", e, WeightInit.Ones);
            _ln2B[i] = Norm(p + "ln_2.bias", e, WeightInit.Zeros);
        }
        _lnFW = Norm("transformer.ln_f.weight", e, WeightInit.Ones);
        _lnFB = Norm("transformer.ln_f.bias", e, WeightInit.Zeros);
        BuildLinears(tiedHead: _wte);
    }

    internal override int KeyValueHeads => _config.HeadCount;
    internal override int HeadDim => _config.HeadDim;
    private float Eps => (float)_config.LayerNormEpsilon;

    private protected override Tensor Embed(Ops ops, int[] ids, int[] positions) =>
        ops.Add(_wte.Lookup(ops, ids), ops.Embedding(positions, _wpe));

    private protected override Tensor Block(Ops ops, int layer, Tensor h, AttentionContext context)
    {
        int e = _config.HiddenSize, heads = _config.HeadCount, d = _config.HeadDim, b = context.Batch, t = context.Tokens;
        var a = ops.LayerNorm(h, _ln1W[layer], _ln1B[layer], Eps);
        var qkv = ops.Split(LayerSlot(layer, CAttn).Layer.Forward(ops, a), e, e, e);
        var o = context.Attend(ops, layer,
            Ops.Reshape(qkv[0], b, t, heads, d), Ops.Reshape(qkv[1], b, t, heads, d), Ops.Reshape(qkv[2], b, t, heads, d));
        h = ops.Add(h, LayerSlot(layer, AttnProj).Layer.Forward(ops, Ops.Reshape(o, b * t, e)));
        var m = ops.LayerNorm(h, _ln2W[layer], _ln2B[layer], Eps);
        m = ops.Gelu(LayerSlot(layer, Fc).Layer.Forward(ops, m));
        Tensor proj;
        using (ops.Tape.UnreadOutput()) proj = LayerSlot(layer, MlpProj).Layer.Forward(ops, m);
        return ops.Add(h, proj);
    }

    private protected override Tensor FinalNorm(Ops ops, Tensor h) => ops.LayerNorm(h, _lnFW, _lnFB, Eps);
}
