using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Models;

/// <summary>A named parameter of a model, as transformers' named_parameters() lists it.</summary>
public sealed record ParameterInfo(string Name, long[] Shape)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A model described from config.json alone, without weights: every parameter with transformers'
/// name and shape (tied weights listed once, as named_parameters() does), and every linear module.
/// Enough to count parameters, match target_modules and plan memory for a model not downloaded.
/// </summary>
public sealed class ModelSkeleton
{
    private ModelSkeleton(ModelConfig config, List<ParameterInfo> parameters, List<LinearModuleInfo> linears)
    {
        Config = config;
        Parameters = parameters;
        Linears = linears;
    }

    public ModelConfig Config { get; }
    public IReadOnlyList<ParameterInfo> Parameters { get; }
    /// <summary>Every linear module (Linear and GPT-2 Conv1D), the output layer last.</summary>
    public IReadOnlyList<LinearModuleInfo> Linears { get; }
    public long ParameterCount => Parameters.Sum(p => p.Count);

    public static ModelSkeleton FromConfig(ModelConfig config) => ModelFamily.Of(config).Skeleton(config);

    internal static ModelSkeleton Gpt2(Gpt2Config c)
    {
        int e = c.HiddenSize, inner = c.IntermediateSize;
        var ps = new List<ParameterInfo>();
        var ls = new List<LinearModuleInfo>();
        ps.Add(new("transformer.wte.weight", [c.VocabSize, e]));
        ps.Add(new("transformer.wpe.weight", [c.MaxPositionEmbeddings, e]));
        for (int i = 0; i < c.LayerCount; i++)
        {
            string p = $"transformer.h.{i}.";
            Norm(ps, p + "ln_1", e, bias: true);
            Conv1D(ps, ls, p + "attn.c_attn", e, 3 * e);
            Conv1D(ps, ls, p + "attn.c_proj", e, e);
            Norm(ps, p + "ln_2", e, bias: true);
            Conv1D(ps, ls, p + "mlp.c_fc", e, inner);
            Conv1D(ps, ls, p + "mlp.c_proj", inner, e);
        }
        Norm(ps, "transformer.ln_f", e, bias: true);
        // GPT2LMHeadModel always ties lm_head to wte.
        ls.Add(new LinearModuleInfo("lm_head", e, c.VocabSize, HasBias: false, IsOutputLayer: true));
        return new ModelSkeleton(c, ps, ls);
    }

    internal static ModelSkeleton Llama(LlamaConfig c)
    {
        int h = c.HiddenSize, hd = c.HeadDim, q = c.HeadCount * hd, kv = c.KeyValueHeadCount * hd, inter = c.IntermediateSize;
        var ps = new List<ParameterInfo>();
        var ls = new List<LinearModuleInfo>();
        ps.Add(new("model.embed_tokens.weight", [c.VocabSize, h]));
        for (int i = 0; i < c.LayerCount; i++)
        {
            string p = $"model.layers.{i}.";
            Linear(ps, ls, p + "self_attn.q_proj", h, q, c.QkvBias);
            Linear(ps, ls, p + "self_attn.k_proj", h, kv, c.QkvBias);
            Linear(ps, ls, p + "self_attn.v_proj", h, kv, c.QkvBias);
            Linear(ps, ls, p + "self_attn.o_proj", q, h, c.OutputBias);
            Linear(ps, ls, p + "mlp.gate_proj", h, inter, c.MlpBias);
            Linear(ps, ls, p + "mlp.up_proj", h, inter, c.MlpBias);
            Linear(ps, ls, p + "mlp.down_proj", inter, h, c.MlpBias);
            Norm(ps, p + "input_layernorm", h, bias: false);
            Norm(ps, p + "post_attention_layernorm", h, bias: false);
        }
        Norm(ps, "model.norm", h, bias: false);
        var head = new LinearModuleInfo("lm_head", h, c.VocabSize, HasBias: false, IsOutputLayer: true);
        if (!c.TieWordEmbeddings) ps.Add(new("lm_head.weight", [c.VocabSize, h]));
        ls.Add(head);
        return new ModelSkeleton(c, ps, ls);
    }

    private static void Norm(List<ParameterInfo> ps, string name, int size, bool bias)
    {
        ps.Add(new(name + ".weight", [size]));
        if (bias) ps.Add(new(name + ".bias", [size]));
    }

    private static void Conv1D(List<ParameterInfo> ps, List<LinearModuleInfo> ls, string name, int fin, int fout)
    {
        ps.Add(new(name + ".weight", [fin, fout]));
        ps.Add(new(name + ".bias", [fout]));
        ls.Add(new LinearModuleInfo(name, fin, fout, HasBias: true, IsConv1D: true));
    }

    private static void Linear(List<ParameterInfo> ps, List<LinearModuleInfo> ls, string name, int fin, int fout, bool bias)
    {
        ps.Add(new(name + ".weight", [fout, fin]));
        if (bias) ps.Add(new(name + ".bias", [fout]));
        ls.Add(new LinearModuleInfo(name, fin, fout, bias));
    }
}
