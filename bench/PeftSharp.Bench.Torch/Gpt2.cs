using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Bench.Torch;

// GPT-2 (transformers' GPT2LMHeadModel) written with TorchSharp modules, as a TorchSharp user would: Conv1D as addmm
// (weights [in, out], as stored), pre-LayerNorm blocks, gelu_new (GELU with the tanh approximation), causal
// scaled_dot_product_attention (or the manual softmax), a tied lm_head. Field names are the checkpoint's, so
// named_parameters() are transformers' names (a LoRA-wrapped c_attn adds `.base_layer`, as PEFT does).
// The lower-case field names are those parameter names.
#pragma warning disable IDE1006

/// <summary>transformers' Conv1D: y = x·W + b with W stored [in, out] (one addmm).</summary>
public sealed class Conv1D : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight, bias;

    public Conv1D(string name, long inFeatures, long outFeatures) : base(name)
    {
        weight = nn.Parameter(empty(inFeatures, outFeatures), requires_grad: false);
        bias = nn.Parameter(zeros(outFeatures), requires_grad: false);
        RegisterComponents();
    }

    public Tensor Weight => weight;

    public override Tensor forward(Tensor x)
    {
        var shape = x.shape.ToArray();
        shape[^1] = weight.shape[1];
        return addmm(bias, x.reshape(-1, x.shape[^1]), weight, beta: 1, alpha: 1).view(shape);
    }
}

/// <summary>PEFT's LoRA on a Conv1D: base(x) + lora_B(lora_A(dropout(x))) · alpha/r; A Kaiming-uniform (a = √5), B zero.</summary>
public sealed class LoraConv1D : nn.Module<Tensor, Tensor>
{
    private readonly Conv1D base_layer;
    private readonly Linear lora_A, lora_B;
    private readonly Dropout lora_dropout;
    private readonly double scaling;

    public LoraConv1D(Conv1D baseLayer, int r, double alpha, double dropout) : base("lora")
    {
        base_layer = baseLayer;
        long inFeatures = baseLayer.Weight.shape[0], outFeatures = baseLayer.Weight.shape[1];
        lora_A = nn.Linear(inFeatures, r, hasBias: false);
        lora_B = nn.Linear(r, outFeatures, hasBias: false);
        lora_dropout = nn.Dropout(dropout);
        scaling = alpha / r;
        using (no_grad())
        {
            nn.init.kaiming_uniform_(lora_A.weight!, a: Math.Sqrt(5));
            nn.init.zeros_(lora_B.weight!);
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => base_layer.forward(x) + lora_B.forward(lora_A.forward(lora_dropout.forward(x))) * scaling;
}

/// <summary>One layer's keys and values so far ([1, heads, tokens, head_dim]), grown by torch.cat as DynamicCache does.</summary>
public sealed class KvCache : IDisposable
{
    public Tensor?[] Keys { get; }
    public Tensor?[] Values { get; }
    public long Length { get; set; }

    public KvCache(int layers)
    {
        Keys = new Tensor?[layers];
        Values = new Tensor?[layers];
    }

    public void Dispose()
    {
        foreach (var t in Keys.Concat(Values)) t?.Dispose();
    }
}

public sealed class Attention : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> c_attn;
    private readonly Conv1D c_proj;
    private readonly int heads;
    private readonly bool sdpa;

    public Attention(int hidden, int heads, bool sdpa, LoraSpec? lora) : base("attn")
    {
        var fused = new Conv1D("c_attn", hidden, 3 * hidden);
        c_attn = lora == null ? fused : new LoraConv1D(fused, lora.R, lora.Alpha, lora.Dropout);
        c_proj = new Conv1D("c_proj", hidden, hidden);
        this.heads = heads;
        this.sdpa = sdpa;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, null, 0);

    /// <summary>Attention of x's tokens (which follow the cache's, if any) over the cache and themselves.</summary>
    public Tensor Forward(Tensor x, KvCache? cache, int layer)
    {
        long b = x.shape[0], t = x.shape[1], c = x.shape[2], d = c / heads;
        var qkv = c_attn.forward(x).split(c, 2);
        Tensor Heads(Tensor y) => y.view(b, t, heads, d).transpose(1, 2);
        Tensor q = Heads(qkv[0]), k = Heads(qkv[1]), v = Heads(qkv[2]);
        bool past = cache is { Length: > 0 };
        if (past && t > 1) throw new NotSupportedException("several new tokens after a cache (not needed by these benchmarks)");
        if (cache != null)
        {
            if (past)
            {
                k = cat([cache.Keys[layer]!, k], 2);
                v = cat([cache.Values[layer]!, v], 2);
            }
            cache.Keys[layer]?.Dispose();
            cache.Values[layer]?.Dispose();
            cache.Keys[layer] = k.DetachFromDisposeScope();
            cache.Values[layer] = v.DetachFromDisposeScope();
        }
        Tensor o;
        if (sdpa) o = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: t > 1);
        else
        {
            var scores = q.matmul(k.transpose(-1, -2)) / Math.Sqrt(d);
            if (t > 1) scores = scores.masked_fill(ones(t, t, dtype: ScalarType.Bool).triu(1), float.NegativeInfinity);
            o = scores.softmax(-1).matmul(v);
        }
        return c_proj.forward(o.transpose(1, 2).reshape(b, t, c));
    }
}

public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly Conv1D c_fc, c_proj;

    public Mlp(int hidden) : base("mlp")
    {
        c_fc = new Conv1D("c_fc", hidden, 4 * hidden);
        c_proj = new Conv1D("c_proj", 4 * hidden, hidden);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => c_proj.forward(nn.functional.gelu(c_fc.forward(x), GELU.Approximate.tanh));
}

public sealed class Block : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm ln_1, ln_2;
    private readonly Attention attn;
    private readonly Mlp mlp;

    public Block(int hidden, int heads, bool sdpa, LoraSpec? lora) : base("block")
    {
        ln_1 = nn.LayerNorm(hidden, eps: 1e-5);
        attn = new Attention(hidden, heads, sdpa, lora);
        ln_2 = nn.LayerNorm(hidden, eps: 1e-5);
        mlp = new Mlp(hidden);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h) => Forward(h, null, 0);

    public Tensor Forward(Tensor h, KvCache? cache, int layer)
    {
        h = h + attn.Forward(ln_1.forward(h), cache, layer);
        return h + mlp.forward(ln_2.forward(h));
    }
}

public sealed class Transformer : nn.Module<Tensor, Tensor>
{
    private readonly Embedding wte, wpe;
    private readonly ModuleList<Block> h;
    private readonly LayerNorm ln_f;

    public Transformer(Gpt2Shape shape, bool sdpa, LoraSpec? lora) : base("transformer")
    {
        wte = nn.Embedding(shape.Vocab, shape.Hidden);
        wpe = nn.Embedding(shape.Positions, shape.Hidden);
        h = nn.ModuleList(Enumerable.Range(0, shape.Layers).Select(_ => new Block(shape.Hidden, shape.Heads, sdpa, lora)).ToArray());
        ln_f = nn.LayerNorm(shape.Hidden, eps: 1e-5);
        RegisterComponents();
    }

    public Tensor TokenEmbedding => wte.weight!;

    public override Tensor forward(Tensor ids) => Forward(ids, null);

    /// <summary>Final hidden states of ids ([batch, tokens]), placed after the cache's tokens.</summary>
    public Tensor Forward(Tensor ids, KvCache? cache)
    {
        long start = cache?.Length ?? 0, t = ids.shape[1];
        var x = wte.forward(ids) + wpe.forward(arange(start, start + t, dtype: ScalarType.Int64)).unsqueeze(0);
        int layer = 0;
        foreach (var block in h) x = block.Forward(x, cache, layer++);
        if (cache != null) cache.Length = start + t;
        return ln_f.forward(x);
    }
}

/// <summary>PEFT's LoraConfig as used here: r, lora_alpha, lora_dropout on c_attn.</summary>
public sealed record LoraSpec(int R, double Alpha, double Dropout);

public sealed record Gpt2Shape(int Layers, int Hidden, int Heads, int Vocab, int Positions)
{
    public static readonly Gpt2Shape DistilGpt2 = new(6, 768, 12, 50257, 1024);
}

/// <summary>GPT2LMHeadModel: the transformer and an lm_head tied to wte (F.linear(h, wte)).</summary>
public sealed class Gpt2LMHead : nn.Module<Tensor, Tensor>
{
    private readonly Transformer transformer;

    /// <summary>The model; with <paramref name="lora"/>, LoRA on every c_attn. Only the LoRA matrices require a gradient
    /// (the frozen base has requires_grad false, so no weight gradient of it is ever computed, as with PEFT).</summary>
    public Gpt2LMHead(Gpt2Shape shape, bool sdpa, LoraSpec? lora = null) : base("gpt2")
    {
        transformer = new Transformer(shape, sdpa, lora);
        RegisterComponents();
        foreach (var (name, p) in named_parameters()) p.requires_grad = name.Contains(".lora_");
    }

    /// <summary>The LoRA matrices (empty without LoRA).</summary>
    public IReadOnlyList<Parameter> Trainable => parameters().Where(p => p.requires_grad).ToArray();

    public override Tensor forward(Tensor ids) => nn.functional.linear(transformer.forward(ids), transformer.TokenEmbedding);

    /// <summary>Logits of the last position only (transformers' generate: logits_to_keep = 1), [batch, vocab].</summary>
    public Tensor LastLogits(Tensor ids, KvCache cache)
    {
        var hidden = transformer.Forward(ids, cache);
        return nn.functional.linear(hidden[.., ^1], transformer.TokenEmbedding);
    }

    /// <summary>The checkpoint's name of a parameter (PEFT's `.base_layer` dropped).</summary>
    public static string CheckpointName(string name) => name.Replace(".base_layer", "");
}
