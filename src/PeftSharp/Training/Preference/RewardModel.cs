using PeftSharp.Autograd;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Training.Preference;

/// <summary>
/// A trained reward model loaded for scoring (what training.trainer: reward produces): a sequence-classifier folder, optionally
/// with a SEQ_CLS PEFT adapter whose score head sits in the adapter's weights. `peftsharp score` and GRPO's reward_model reward
/// both score through it. Not thread-safe: one scoring tape.
/// </summary>
public sealed class RewardModel : IDisposable
{
    private readonly SequenceClassifier _classifier;
    private readonly PeftModel? _peft;
    private readonly Tape _tape = new() { GradEnabled = false, Training = false };
    private readonly int _pad;

    private RewardModel(string folder, SequenceClassifier classifier, PeftModel? peft, Tokenizer tokenizer)
    {
        ModelFolder = folder;
        _classifier = classifier;
        _peft = peft;
        Tokenizer = tokenizer;
        _pad = classifier.Config.PadTokenId ?? tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;
    }

    /// <summary>The model folder (the adapter's base when an adapter was given).</summary>
    public string ModelFolder { get; }
    public Tokenizer Tokenizer { get; }
    public int NumLabels => _classifier.NumLabels;

    /// <summary>The model folder's chat template (TRL renders conversational prompt + completion with the reward model's tokenizer).</summary>
    public ChatTemplate? ChatTemplate => field ??= Data.SftData.ResolveChatTemplate(null, ModelFolder);

    /// <summary>
    /// Loads <paramref name="model"/> (a model folder or hub id) with <paramref name="adapter"/> (a SEQ_CLS adapter folder) when
    /// given; a <paramref name="model"/> that is itself an adapter folder (adapter_config.json) loads on its base_model_name_or_path.
    /// </summary>
    public static RewardModel Load(string model, string? adapter = null)
    {
        if (adapter == null && File.Exists(Path.Combine(model, LoraConfig.FileName)))
        {
            adapter = model;
            model = LoraConfig.Load(Path.Combine(adapter, LoraConfig.FileName)).BaseModelNameOrPath
                ?? throw new PeftSharpException($"{Path.Combine(adapter, LoraConfig.FileName)}: no base_model_name_or_path, so the reward model's base is unknown.");
        }
        string folder = Formats.ModelFolder.Resolve(model);
        var tokenizer = Tokenizer.FromFolder(folder);
        int? labels = null;
        if (adapter != null)
            using (var st = SafetensorsFile.Open(Path.Combine(adapter, PeftModel.WeightsFileName)))
                if (st.Tensors.FirstOrDefault(t => t.Name.EndsWith(".score.weight", StringComparison.Ordinal)) is { } w) labels = (int)w.Shape[0];
        var classifier = SequenceClassifier.Load(folder, labels);
        try { return new RewardModel(folder, classifier, adapter != null ? PeftModel.FromPretrained(classifier, adapter) : null, tokenizer); }
        catch { classifier.Dispose(); throw; }
    }

    /// <summary>The classifier's logits for one text (one value per label).</summary>
    public float[] Score(string text, bool addSpecialTokens = true)
    {
        var ids = Tokenizer.Encode(text, addSpecialTokens);
        if (ids.Length == 0) ids = [_pad];
        try { return _classifier.Classify(new Ops(_tape), new TokenBatch(1, ids.Length, ids)).AsSpan().ToArray(); }
        finally { _tape.Reset(); }
    }

    public void Dispose()
    {
        _peft?.Dispose();
        _classifier.Dispose();
        _tape.Dispose();
    }
}
