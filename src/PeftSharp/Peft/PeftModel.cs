using System.Globalization;
using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Peft;

/// <summary>
/// PEFT's get_peft_model / PeftModel for LoRA over an <see cref="ICausalLM"/>: wraps the target
/// linear slots with <see cref="LoraLinear"/>, the modules_to_save with trainable copies, and keeps
/// one <see cref="LoraConfig"/> per adapter name.
/// <para>
/// Freezing: a <see cref="Parameter"/>'s trainability is fixed when it is created, so the base model
/// must be loaded frozen: every parameter of <see cref="ICausalLM.Parameters"/> frozen, except that
/// bias "all" needs the model's non-linear bias parameters (names containing "bias", e.g. GPT-2's
/// LayerNorm biases) loaded trainable. Linear biases are handled here: bias "all" / "lora_only" give
/// the linear layers trainable bias copies. <see cref="Wrap"/> checks all of this and says what to change.
/// </para>
/// </summary>
public sealed partial class PeftModel : IDisposable
{
    public const string DefaultAdapterName = "default";

    private readonly Dictionary<string, LoraConfig> _configs = new(StringComparer.Ordinal);
    private readonly List<string> _notices = [];
    private List<string> _active = [];
    private bool _disabled;

    private PeftModel(ICausalLM model) { Model = model; }

    public ICausalLM Model { get; }

    /// <summary>The config of each adapter, in the order they were added.</summary>
    public IReadOnlyDictionary<string, LoraConfig> Configs => _configs;

    /// <summary>PEFT's warnings, word for word (e.g. the Conv1D fan_in_fan_out one), for the caller to show.</summary>
    public IReadOnlyList<string> Notices => _notices;

    public IReadOnlyList<string> ActiveAdapters => _active;
    public string ActiveAdapter => _active.Count > 0 ? _active[0] : throw new PeftSharpException("No adapter is active.");

    public IEnumerable<LoraLinear> LoraLayers => Model.Linears.Select(s => s.Layer).OfType<LoraLinear>();
    public IEnumerable<ModulesToSaveLinear> SavedModules => Model.Linears.Select(s => s.Layer).OfType<ModulesToSaveLinear>();

    /// <summary>
    /// get_peft_model: wraps the modules the config targets with a new adapter. The model must be
    /// loaded frozen (see the class remarks). <paramref name="rng"/> initializes A (and B with
    /// init_lora_weights false) and seeds the dropout masks; default seed 0.
    /// </summary>
    public static PeftModel Wrap(ICausalLM model, LoraConfig config, string adapterName = DefaultAdapterName, Rng? rng = null)
    {
        var pm = new PeftModel(model);
        pm.AddAdapter(adapterName, config, rng, trainable: !config.InferenceMode);
        pm.SetAdapter(adapterName);
        return pm;
    }

    /// <summary>PeftModel.from_pretrained: wraps <paramref name="model"/> with the adapter saved in <paramref name="adapterDirectory"/>.</summary>
    public static PeftModel FromPretrained(ICausalLM model, string adapterDirectory, string adapterName = DefaultAdapterName, bool isTrainable = false)
    {
        var pm = new PeftModel(model);
        pm.LoadAdapter(adapterDirectory, adapterName, isTrainable);
        pm.SetAdapter(adapterName);
        return pm;
    }

    /// <summary>
    /// A PeftModel holding no adapter yet, for a host that loads and unloads adapters at run time (<see cref="LoadAdapter"/>,
    /// <see cref="DeleteAdapter"/>) and picks one per batch row. The model must be loaded frozen.
    /// </summary>
    public static PeftModel WithoutAdapters(ICausalLM model) => new(model);

    /// <summary>add_adapter: injects another adapter (the active adapter does not change).</summary>
    public void AddAdapter(string name, LoraConfig config, Rng? rng = null, bool trainable = true) =>
        Inject(name, config, rng ?? new Rng(0), trainable, initialize: true);

    private void Inject(string name, LoraConfig config, Rng rng, bool trainable, bool initialize)
    {
        AdapterName.Validate(name);
        if (_configs.ContainsKey(name)) throw new PeftSharpException($"An adapter named \"{name}\" already exists; pick another name or delete it first.");
        config.Validate();
        if (_configs.Count == 0) CheckFrozen(config);
        else if (config.Bias != "none")
            throw new PeftSharpException($"lora: adapter \"{name}\" has bias \"{config.Bias}\": LoRA supports only 1 adapter with bias. When using multiple adapters, set bias to 'none' for all adapters.");

        var slots = Model.Linears;
        var match = TargetMatcher.Match(config, slots.Select(s => s.Info).ToList(), Model.Config.ModelType);
        bool anyConv = match.Modules.Any(m => m.IsConv1D), anyLinear = match.Modules.Any(m => !m.IsConv1D);
        if (anyConv && !config.FanInFanOut)
        {
            _notices.Add("fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True.");
            config.FanInFanOut = true;
        }
        else if (anyLinear && !anyConv && config.FanInFanOut)
        {
            _notices.Add("fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. Setting fan_in_fan_out to False.");
            config.FanInFanOut = false;
        }
        config.BaseModelNameOrPath ??= Model.Config.SourcePath is { } src ? Path.GetDirectoryName(src) : null;

        var targeted = match.Modules.Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
        var saveNames = ModulesToSaveFor(config);
        foreach (var slot in slots)
        {
            bool isTarget = targeted.Contains(slot.Name);
            bool isSaved = saveNames.Any(n => slot.Name.EndsWith(n, StringComparison.Ordinal));
            if (isTarget && isSaved)
                throw new PeftSharpException($"lora: module {slot.Name} is both a LoRA target and in modules_to_save; remove it from one of them.");
            if (isTarget || (config.Bias == "all" && slot.Info.HasBias && !isSaved))
            {
                var lora = slot.Layer switch
                {
                    LoraLinear l => l,
                    IBaseLinear b => new LoraLinear(b),
                    var other => throw new PeftSharpException($"lora: module {slot.Name} is already wrapped by {other.GetType().Name} (modules_to_save?); it cannot also get a LoRA adapter."),
                };
                slot.Layer = lora;
                if (isTarget)
                {
                    var ad = lora.AddAdapter(name, config.RankFor(slot.Name), config.ScalingFor(slot.Name), (float)config.LoraDropout,
                        config.InitLoraWeights, config.UseDora && initialize, trainable, rng);
                    if (config.UseDora && !initialize) AddMagnitude(lora, ad, trainable);
                }
                if (config.Bias != "none") lora.EnableTrainableBias(trainable);
            }
            else if (isSaved)
            {
                var wrapper = slot.Layer switch
                {
                    ModulesToSaveLinear w => w,
                    IBaseLinear b => new ModulesToSaveLinear(b),
                    var other => throw new PeftSharpException($"lora: module {slot.Name} in modules_to_save is already wrapped by {other.GetType().Name}."),
                };
                slot.Layer = wrapper;
                wrapper.AddCopy(name, trainable);
            }
        }
        if (config.ModulesToSave != null)
            foreach (var n in config.ModulesToSave)
                if (!slots.Any(s => s.Name.EndsWith(n, StringComparison.Ordinal)))
                    throw new PeftSharpException(Model.Parameters.Any(p => p.Name.StartsWith(n + ".", StringComparison.Ordinal) || p.Name.Contains("." + n + ".", StringComparison.Ordinal))
                        ? $"lora: modules_to_save \"{n}\" is not a linear module; only linear modules (lm_head, score) can be saved in full here."
                        : $"lora: modules_to_save \"{n}\" matched no module of the model.");
        _configs[name] = config;
        ApplyState();
    }

    /// <summary>A zero magnitude vector filled later from a saved adapter (DoRA loading).</summary>
    private static void AddMagnitude(LoraLinear lora, LoraAdapter ad, bool trainable)
    {
        var m = Parameter.Create(LoraAdapter.ParameterName(lora.Info.Name, "lora_magnitude_vector", ad.Name), [lora.Info.OutFeatures], trainable);
        lora.AttachMagnitude(ad.Name, m);
    }

    /// <summary>modules_to_save, with PEFT's defaults for sequence classification ("classifier", "score").</summary>
    private static IReadOnlyList<string> ModulesToSaveFor(LoraConfig config) =>
        config.ModulesToSave is { } list
            ? (config.TaskType == "SEQ_CLS" ? list.Concat(["classifier", "score"]).Distinct().ToList() : list)
            : config.TaskType == "SEQ_CLS" ? ["classifier", "score"] : [];

    private void CheckFrozen(LoraConfig config)
    {
        var slotParams = SlotParameters();
        foreach (var p in Model.Parameters)
        {
            if (slotParams.Contains(p))
            {
                if (p.RequiresGrad)
                    throw new PeftSharpException($"Parameter {p.Name} is trainable; load the base model frozen before wrapping it with LoRA (only the adapters train).");
                continue;
            }
            bool bias = config.Bias == "all" && p.Name.Contains("bias", StringComparison.Ordinal);
            // An adapter loaded for inference (merge, generate) copies its trained biases in; nothing trains them.
            if (bias && config.InferenceMode) continue;
            bool wantTrainable = bias;
            if (p.RequiresGrad != wantTrainable)
                throw new PeftSharpException(wantTrainable
                    ? $"lora: bias \"all\" trains every bias, but {p.Name} is frozen; load the model with its non-linear bias parameters trainable, or use bias \"lora_only\" or \"none\"."
                    : $"Parameter {p.Name} is trainable; load the base model frozen before wrapping it with LoRA (only the adapters train).");
        }
    }

    private HashSet<Parameter> SlotParameters()
    {
        var set = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var s in Model.Linears) set.UnionWith(s.Base.Parameters);
        return set;
    }

    /// <summary>set_adapter: makes these adapters active (several: their outputs are summed).</summary>
    public void SetAdapter(params string[] names)
    {
        if (names.Length == 0) throw new ArgumentException("Name at least one adapter.", nameof(names));
        foreach (var n in names)
            if (!_configs.ContainsKey(n)) throw new PeftSharpException($"No adapter \"{n}\"; adapters: {string.Join(", ", _configs.Keys)}.");
        _active = names.ToList();
        ApplyState();
    }

    /// <summary>disable_adapter: with adapters disabled the model computes exactly the base model.</summary>
    public bool AdaptersDisabled
    {
        get => _disabled;
        set { _disabled = value; ApplyState(); }
    }

    private void ApplyState()
    {
        foreach (var l in LoraLayers)
        {
            l.SetActiveAdapters(_active.Where(l.HasAdapter));
            l.AdaptersDisabled = _disabled;
        }
        foreach (var w in SavedModules)
        {
            w.ActiveAdapter = _active.FirstOrDefault(w.Copies.ContainsKey);
            w.AdaptersDisabled = _disabled;
        }
    }

    /// <summary>delete_adapter. When it was active, the first remaining adapter becomes active.</summary>
    public void DeleteAdapter(string name)
    {
        if (!_configs.Remove(name)) throw new PeftSharpException($"No adapter \"{name}\"; adapters: {string.Join(", ", _configs.Keys)}.");
        foreach (var l in LoraLayers) if (l.HasAdapter(name)) l.DeleteAdapter(name);
        foreach (var w in SavedModules) w.DeleteCopy(name);
        _active.Remove(name);
        if (_active.Count == 0 && _configs.Count > 0) _active = [_configs.Keys.First()];
        ApplyState();
    }

    /// <summary>Every parameter that trains (adapters, trainable biases, modules_to_save copies), each once.</summary>
    public IEnumerable<Parameter> TrainableParameters => DistinctParameters().Where(p => p.RequiresGrad);

    private IEnumerable<Parameter> DistinctParameters()
    {
        var seen = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
        foreach (var p in Model.Parameters)
            if (seen.Add(p)) yield return p;
        foreach (var s in Model.Linears)
            foreach (var p in s.Layer.Parameters)
                if (seen.Add(p)) yield return p;
    }

    /// <summary>
    /// get_nb_trainable_parameters: (trainable, all), where all counts every parameter once (the
    /// adapters included) and a base layer that holds its weight in another form (4-bit) counts
    /// as its full [out, in] size, as PEFT counts bitsandbytes weights.
    /// </summary>
    public (long Trainable, long All) CountParameters()
    {
        long trainable = 0, all = 0;
        foreach (var p in DistinctParameters())
        {
            all += p.Length;
            if (p.RequiresGrad) trainable += p.Length;
        }
        foreach (var s in Model.Linears)
        {
            long held = s.Base.Parameters.Distinct(ReferenceEqualityComparer.Instance).Cast<Parameter>().Sum(p => p.Length);
            if (held < s.Info.ParameterCount && !IsTiedElsewhere(s)) all += s.Info.ParameterCount - held;
            // A trainable bias copy stands for the base bias (PEFT trains the base bias itself).
            if (s.Layer is LoraLinear { TrainableBias: { } } l && l.BaseLayer.Bias is { } b) all -= b.Length;
        }
        return (trainable, all);
    }

    private static bool IsTiedElsewhere(LinearSlot s) => s.Base.Parameters.Any(p => p.Name != s.Name + ".weight" && p.Name != s.Name + ".bias");

    /// <summary>print_trainable_parameters' line: "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797".</summary>
    public string PrintTrainableParameters()
    {
        var (t, a) = CountParameters();
        return FormatTrainable(t, a);
    }

    internal static string FormatTrainable(long trainable, long all) => string.Create(CultureInfo.InvariantCulture,
        $"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {100.0 * trainable / all:F4}");

    public void Dispose()
    {
        foreach (var s in Model.Linears)
            if (s.Layer is IWrappedLinear w)
            {
                s.Layer = w.BaseLayer;
                w.Dispose();
            }
    }
}
