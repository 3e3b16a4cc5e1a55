using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Autograd;

/// <summary>A two-block decoder built only from autograd ops: GPT-2 style or Llama style.</summary>
internal sealed class TinyTransformer : IDisposable
{
    public const int Vocab = 16, Channels = 32, Heads = 4, HeadDim = 8, Hidden = 64, Layers = 2, MaxPositions = 32;
    private readonly bool _llama;
    private readonly int _kvHeads;
    private readonly RopeCache? _rope;
    private readonly Dictionary<string, Parameter> _p = [];

    public TinyTransformer(bool llama, ulong seed)
    {
        _llama = llama;
        _kvHeads = llama ? 2 : Heads;
        var rng = new Rng(seed);
        Add("wte", [Vocab, Channels], rng, 0.5f);
        if (!llama) Add("wpe", [MaxPositions, Channels], rng, 0.1f);
        for (int l = 0; l < Layers; l++)
        {
            Add($"{l}.norm1.w", [Channels], null, 1f);
            Add($"{l}.norm2.w", [Channels], null, 1f);
            if (!llama)
            {
                Add($"{l}.norm1.b", [Channels], null, 0f);
                Add($"{l}.norm2.b", [Channels], null, 0f);
            }
            Add($"{l}.q", [Heads * HeadDim, Channels], rng, 0f);
            Add($"{l}.k", [_kvHeads * HeadDim, Channels], rng, 0f);
            Add($"{l}.v", [_kvHeads * HeadDim, Channels], rng, 0f);
            Add($"{l}.o", [Channels, Heads * HeadDim], rng, 0f);
            Add($"{l}.up", [Hidden, Channels], rng, 0f);
            if (llama) Add($"{l}.gate", [Hidden, Channels], rng, 0f);
            Add($"{l}.down", [Channels, Hidden], rng, 0f);
        }
        Add("norm_f.w", [Channels], null, 1f);
        if (!llama) Add("norm_f.b", [Channels], null, 0f);
        Add("lm_head", [Vocab, Channels], rng, 0f);
        if (llama) _rope = RopeCache.Create(10000.0, HeadDim, MaxPositions);
    }

    public IEnumerable<Parameter> Parameters => _p.Values;

    private void Add(string name, int[] shape, Rng? rng, float value)
    {
        var p = Parameter.Create(name, shape, requiresGrad: true);
        if (rng == null) p.AsSpan().Fill(value);
        else if (value > 0) rng.FillNormal(p.AsSpan(), 0f, value);
        else rng.FillKaimingUniform(p.AsSpan(), shape[1]);
        _p[name] = p;
    }

    /// <summary>Logits (B·T, V) for token ids (B·T).</summary>
    public Tensor Forward(Ops ops, int[] ids, int[] positions, int batch, int tokens)
    {
        var x = ops.Embedding(ids, _p["wte"]);
        if (!_llama) x = ops.Add(x, ops.Embedding(positions, _p["wpe"]));
        for (int l = 0; l < Layers; l++)
        {
            var h = Norm(ops, x, $"{l}.norm1");
            var q = Ops.Reshape(ops.Linear(h, _p[$"{l}.q"]), batch, tokens, Heads, HeadDim);
            var k = Ops.Reshape(ops.Linear(h, _p[$"{l}.k"]), batch, tokens, _kvHeads, HeadDim);
            var v = Ops.Reshape(ops.Linear(h, _p[$"{l}.v"]), batch, tokens, _kvHeads, HeadDim);
            if (_rope != null)
            {
                q = ops.Rope(q, positions, _rope);
                k = ops.Rope(k, positions, _rope);
            }
            var a = Ops.Reshape(ops.Attention(q, k, v), batch * tokens, Heads * HeadDim);
            x = ops.Add(x, ops.Linear(a, _p[$"{l}.o"]));
            h = Norm(ops, x, $"{l}.norm2");
            var m = _llama
                ? ops.SwiGlu(ops.Linear(h, _p[$"{l}.gate"]), ops.Linear(h, _p[$"{l}.up"]))
                : ops.Gelu(ops.Linear(h, _p[$"{l}.up"]));
            x = ops.Add(x, ops.Linear(m, _p[$"{l}.down"]));
        }
        return ops.Linear(Norm(ops, x, "norm_f"), _p["lm_head"]);
    }

    private Tensor Norm(Ops ops, Tensor x, string name)
        => _llama ? ops.RmsNorm(x, _p[name + ".w"], 1e-6f) : ops.LayerNorm(x, _p[name + ".w"], _p[name + ".b"], 1e-5f);

    public void Dispose()
    {
        foreach (var p in _p.Values) p.Dispose();
        _rope?.Dispose();
    }
}
