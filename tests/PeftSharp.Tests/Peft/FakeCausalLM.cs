using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Peft;

/// <summary>A base layer with shapes and names only (no memory): enough to match, load and save adapters.</summary>
internal sealed unsafe class ShapeOnlyLinear(LinearModuleInfo info, Parameter weight, Parameter? bias) : IBaseLinear
{
    public LinearModuleInfo Info { get; } = info;
    public Parameter? Bias { get; } = bias;
    public Tensor Forward(Ops ops, Tensor x) => throw new NotSupportedException("shape-only layer");
    public IEnumerable<Parameter> Parameters => Bias == null ? [weight] : [weight, Bias];
    public void ReadWeight(float* destination) => throw new NotSupportedException("shape-only layer");
    public bool CanModifyWeight => false;
    public void AddToWeight(float* delta, float scale) => throw new NotSupportedException("shape-only layer");
    public void Dispose() { }
}

/// <summary>
/// An ICausalLM built from a ModelSkeleton: the real module names and shapes, frozen parameters,
/// either shape-only (no memory: for loading real adapters of big models) or dense with small
/// random weights (for numbers). Forward is not implemented: the tests drive the layers directly.
/// </summary>
internal sealed class FakeCausalLM : ICausalLM
{
    private readonly List<Parameter> _others = [];
    private readonly List<LinearSlot> _slots = [];

    public FakeCausalLM(ModelConfig config, bool shapeOnly, Rng? rng = null, IEnumerable<LinearModuleInfo>? replaceHead = null, bool trainableBiases = false)
    {
        Config = config;
        var sk = ModelSkeleton.FromConfig(config);
        var linearParams = new HashSet<string>(sk.Linears.SelectMany(l => new[] { l.Name + ".weight", l.Name + ".bias" }));
        var byName = new Dictionary<string, Parameter>();
        foreach (var p in sk.Parameters.Where(p => !linearParams.Contains(p.Name)))
        {
            var shape = p.Shape.Select(d => (int)d).ToArray();
            bool train = trainableBiases && p.Name.Contains("bias");
            var param = shapeOnly ? MakeView(p.Name, shape, train) : Parameter.Create(p.Name, shape, train);
            if (!shapeOnly) rng!.FillUniform(param.AsSpan(), -0.1f, 0.1f);
            _others.Add(param);
            byName[p.Name] = param;
        }
        var linears = sk.Linears.Where(l => !l.IsOutputLayer || replaceHead == null).Concat(replaceHead ?? []);
        foreach (var info in linears)
        {
            bool tied = info.IsOutputLayer && !sk.Parameters.Any(p => p.Name == info.Name + ".weight") && info.Name == "lm_head";
            bool dense = !shapeOnly || (replaceHead?.Contains(info) ?? false);
            Parameter w = tied ? byName[config.ModelType == "gpt2" ? "transformer.wte.weight" : "model.embed_tokens.weight"]
                : dense ? Parameter.Create(info.Name + ".weight", [info.OutFeatures, info.InFeatures], false)
                : MakeView(info.Name + ".weight", [info.OutFeatures, info.InFeatures], false);
            Parameter? b = !info.HasBias ? null
                : dense ? Parameter.Create(info.Name + ".bias", [info.OutFeatures], false)
                : MakeView(info.Name + ".bias", [info.OutFeatures], false);
            if (dense && !tied) rng!.FillUniform(w.AsSpan(), -0.1f, 0.1f);
            if (dense && b != null) rng!.FillUniform(b.AsSpan(), -0.1f, 0.1f);
            ILinearLayer layer = dense ? new DenseLinear(info, w, b) : new ShapeOnlyLinear(info, w, b);
            _slots.Add(new LinearSlot(info, layer));
        }
    }

    private static unsafe Parameter MakeView(string name, int[] shape, bool trainable) => Parameter.View(name, shape, null, trainable);

    public static ModelConfig LoadConfig(string file) =>
        ModelConfig.Load(Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "configs", file));

    /// <summary>A tiny Llama-family config (hidden 8, 2 layers, grouped-query attention).</summary>
    public static ModelConfig TinyLlama() => ModelConfig.Parse("""
        {"model_type": "llama", "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16, "max_position_embeddings": 32,
         "rms_norm_eps": 1e-6, "tie_word_embeddings": false}
        """);

    /// <summary>A tiny GPT-2 config (Conv1D layers, tied head).</summary>
    public static ModelConfig TinyGpt2() => ModelConfig.Parse("""
        {"model_type": "gpt2", "n_embd": 8, "n_layer": 2, "n_head": 2, "vocab_size": 16, "n_positions": 32}
        """);

    public ModelConfig Config { get; }
    public IReadOnlyList<LinearSlot> Linears => _slots;

    public IEnumerable<Parameter> Parameters
    {
        get
        {
            var seen = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
            foreach (var p in _others) if (seen.Add(p)) yield return p;
            foreach (var s in _slots)
                foreach (var p in s.Layer.Parameters)
                    if (seen.Add(p)) yield return p;
        }
    }

    public Tensor Forward(Ops ops, TokenBatch batch) => throw new NotSupportedException();
    public Tensor Loss(Ops ops, TokenBatch batch) => throw new NotSupportedException();
    public IDecodeSession StartDecoding(int batch, int maxTokens) => throw new NotSupportedException();

    public void Dispose()
    {
        foreach (var s in _slots) s.Layer.Dispose();
        foreach (var p in _others) p.Dispose();
    }
}
