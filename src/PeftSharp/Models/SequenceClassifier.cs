using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Tensors;
using PeftSharp.Training;

namespace PeftSharp.Models;

/// <summary>
/// transformers' GPT2ForSequenceClassification / LlamaForSequenceClassification (Mistral, Qwen2): the decoder's final hidden
/// states, a bias-free linear <c>score</c> head of num_labels outputs in the output layer's slot, pooled at the last
/// non-padding token of each row (the rightmost token that is not pad_token_id, as transformers finds it; without a
/// pad_token_id the last token the attention mask keeps). num_labels is config.json's <c>num_labels</c> or the size of its
/// <c>id2label</c>. The <c>score</c> weight comes from the checkpoint when it has one (a saved classifier) and is otherwise
/// drawn from N(0, initializer_range²), as transformers initialises a new head.
/// <para>
/// Module names are the causal LM's without its <c>lm_head</c>, plus <c>score</c>, so a PEFT SEQ_CLS adapter's keys
/// (targets in the decoder, <c>score.weight</c> in modules_to_save) load as they do in Python. The decoder keeps its
/// output layer (unused here, not in <see cref="Linears"/>).
/// </para>
/// </summary>
public sealed unsafe class SequenceClassifier : ICausalLM, IRandomStreams, IGradientCheckpointing
{
    public const string HeadName = "score";
    private readonly CausalLM _decoder;
    private readonly LinearSlot _score;
    private readonly LinearSlot[] _slots;
    private readonly Parameter _weight;

    public SequenceClassifier(CausalLM decoder, int numLabels, Parameter weight)
    {
        _decoder = decoder;
        NumLabels = numLabels;
        int hidden = decoder.Config.HiddenSize;
        if (weight.Shape.Length != 2 || weight.Shape[0] != numLabels || weight.Shape[1] != hidden)
            throw new PeftSharpException($"score.weight is {weight.ShapeText}; this model needs [{numLabels}, {hidden}] (num_labels × hidden size).");
        _weight = weight;
        var info = new LinearModuleInfo(HeadName, hidden, numLabels, HasBias: false, IsOutputLayer: true);
        _score = new LinearSlot(info, new DenseLinear(info, weight, null));
        _slots = [.. decoder.Linears.Where(s => !s.Info.IsOutputLayer), _score];
    }

    /// <summary>
    /// Loads a model folder as a classifier (a causal-LM checkpoint gets a new score head). <paramref name="numLabels"/>
    /// overrides config.json's (a reward model has 1); the head is trainable with <see cref="LoadOptions.FullFineTune"/>.
    /// </summary>
    public static SequenceClassifier Load(string folderOrHubId, int? numLabels = null, LoadOptions? options = null, Func<string, LoadOptions?, CausalLM>? loadDecoder = null)
    {
        options ??= new LoadOptions();
        string folder = ModelFolder.Resolve(folderOrHubId);
        // The classifier never uses the decoder's untied lm_head: it is not read (a saved *ForSequenceClassification folder has none).
        var inner = options.LinearOverride;
        var decoderOptions = options with { LinearOverride = info => info.IsOutputLayer ? new AbsentHead(info) : inner?.Invoke(info) };
        var decoder = (loadDecoder ?? ((f, o) => CausalLM.Load(f, o)))(folder, decoderOptions);
        try
        {
            int labels = numLabels ?? NumLabelsOf(decoder.Config.Raw);
            var weight = Parameter.Create(HeadName + ".weight", [labels, decoder.Config.HiddenSize], options.FullFineTune);
            using (var checkpoint = SafetensorsCheckpoint.Open(folder))
            {
                if (checkpoint.TryGetTensor(HeadName + ".weight", out var stored) && stored.Shape.Length == 2 && stored.Shape[0] == labels)
                    stored.ReadFloat32(weight.Data);
                else
                {
                    double std = decoder.Config.Raw["initializer_range"] is JsonValue v && v.TryGetValue<double>(out var r) ? r : 0.02;
                    new Rng(0x5C0BE).FillNormal(weight.AsSpan(), 0f, (float)std);
                }
            }
            return new SequenceClassifier(decoder, labels, weight);
        }
        catch
        {
            decoder.Dispose();
            throw;
        }
    }

    /// <summary>
    /// config.json as transformers saves a *ForSequenceClassification model: the architecture named after the causal LM's
    /// (GPT2LMHeadModel → GPT2ForSequenceClassification, LlamaForCausalLM → LlamaForSequenceClassification), and
    /// id2label/label2id with num_labels entries (kept when the config's already has that many).
    /// </summary>
    public JsonObject SavedConfig()
    {
        var json = _decoder.Config.ToJson();
        string causal = json["architectures"] is JsonArray a && a.Count > 0 && a[0] is JsonValue v && v.TryGetValue<string>(out var name) ? name : "";
        string stem = causal.EndsWith("ForSequenceClassification", StringComparison.Ordinal) ? causal[..^"ForSequenceClassification".Length]
            : causal.EndsWith("LMHeadModel", StringComparison.Ordinal) ? causal[..^"LMHeadModel".Length]
            : causal.EndsWith("ForCausalLM", StringComparison.Ordinal) ? causal[..^"ForCausalLM".Length] : causal;
        json["architectures"] = new JsonArray(stem + "ForSequenceClassification");
        if (!(json["id2label"] is JsonObject labels && labels.Count == NumLabels))
        {
            var id2label = new JsonObject();
            var label2id = new JsonObject();
            for (int i = 0; i < NumLabels; i++)
            {
                id2label[i.ToString(System.Globalization.CultureInfo.InvariantCulture)] = $"LABEL_{i}";
                label2id[$"LABEL_{i}"] = i;
            }
            json["id2label"] = id2label;
            json["label2id"] = label2id;
        }
        json.Remove("num_labels");
        return json;
    }

    /// <summary>config.json's num_labels, else the size of id2label, else transformers' default 2.</summary>
    public static int NumLabelsOf(JsonObject config) =>
        config["num_labels"] is JsonValue n && n.TryGetValue<int>(out var k) ? k
        : config["id2label"] is JsonObject map && map.Count > 0 ? map.Count : 2;

    public int NumLabels { get; }
    public CausalLM Decoder => _decoder;
    public ModelConfig Config => _decoder.Config;
    public IReadOnlyList<LinearSlot> Linears => _slots;
    public LinearSlot Score => _score;

    /// <summary>The slots' parameters (adapters included) and the decoder's embeddings and norms; an untied lm_head is not one.</summary>
    public IEnumerable<Parameter> Parameters =>
        _slots.SelectMany(s => s.Layer.Parameters).Concat(_decoder.OwnParameters).Distinct(ReferenceEqualityComparer.Instance).Cast<Parameter>();

    public IReadOnlyList<HalfMatrix> HalfWeights => _decoder.HalfWeights;

    public bool GradientCheckpointing
    {
        get => _decoder.GradientCheckpointing;
        set => _decoder.GradientCheckpointing = value;
    }

    public void Reseed(ulong key) => _decoder.Reseed(key);

    /// <summary>The row of each sequence's last non-padding token (b·seqLen + t).</summary>
    public int[] PoolRows(TokenBatch batch)
    {
        var rows = new int[batch.Batch];
        int? pad = Config.PadTokenId;
        for (int b = 0; b < batch.Batch; b++)
        {
            int last = batch.SeqLen - 1;
            if (pad is int p)
            {
                // transformers: argmax over positions of position·(id != pad): the rightmost non-pad token, 0 when all are pad.
                last = 0;
                for (int t = 0; t < batch.SeqLen; t++) if (batch.InputIds[b * batch.SeqLen + t] != p) last = t;
            }
            else if (batch.AttentionMask != null)
            {
                last = 0;
                for (int t = 0; t < batch.SeqLen; t++) if (batch.AttentionMask[b * batch.SeqLen + t] != 0) last = t;
            }
            rows[b] = b * batch.SeqLen + last;
        }
        return rows;
    }

    /// <summary>The pooled logits (batch, num_labels): score(hidden state of each row's last non-padding token).</summary>
    public Tensor Classify(Ops ops, TokenBatch batch)
    {
        var hidden = _decoder.HiddenStates(ops, batch);
        return _score.Layer.Forward(ops, ops.GatherRows(hidden, PoolRows(batch)));
    }

    /// <summary>The score head on every token (batch·seqLen, num_labels): transformers' logits before pooling.</summary>
    public Tensor Forward(Ops ops, TokenBatch batch) => _score.Layer.Forward(ops, _decoder.HiddenStates(ops, batch));

    public Tensor Loss(Ops ops, TokenBatch batch) =>
        throw new PeftSharpException("a sequence classifier has no language-modelling loss; train it with training.trainer: reward.");

    public IDecodeSession StartDecoding(int batch, int maxTokens) =>
        throw new PeftSharpException("a sequence classifier does not generate text.");

    public void Dispose()
    {
        if (!ReferenceEquals(_score.Layer, _score.Base)) _score.Layer.Dispose();
        _score.Base.Dispose();
        _decoder.Dispose();
    }
}

/// <summary>The decoder's untied output layer under a classifier: no weight is read or held, and nothing may call it.</summary>
internal sealed unsafe class AbsentHead(LinearModuleInfo info) : IBaseLinear
{
    public LinearModuleInfo Info { get; } = info;
    public Parameter? Bias => null;
    public IEnumerable<Parameter> Parameters => [];
    public bool CanModifyWeight => false;
    private PeftSharpException Unused() => new($"{Info.Name}: a sequence classifier has no language-modelling head (its weight is not loaded).");
    public Tensor Forward(Ops ops, Tensor x) => throw Unused();
    public void ReadWeight(float* destination) => throw Unused();
    public void AddToWeight(float* delta, float scale) => throw Unused();
    public void Dispose() { }
}
