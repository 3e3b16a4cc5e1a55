using PeftSharp.Autograd;
using PeftSharp.Formats;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Peft;

/// <summary>
/// Adapters in PEFT's file format: a folder with adapter_config.json and adapter_model.safetensors
/// (float32, metadata {"format": "pt"}) whose keys are PEFT's without the adapter name:
/// `base_model.model.&lt;module&gt;.lora_A.weight` [r, in], `...lora_B.weight` [out, r],
/// `...lora_magnitude_vector` [out] (DoRA), `base_model.model.&lt;module&gt;.weight` (modules_to_save)
/// and `base_model.model.&lt;module&gt;.bias` (bias "all" / "lora_only").
/// </summary>
public sealed partial class PeftModel
{
    public const string WeightsFileName = "adapter_model.safetensors";
    public const string KeyPrefix = "base_model.model.";

    /// <summary>
    /// save_pretrained: the "default" adapter (or the first) in <paramref name="directory"/>, every
    /// other adapter in a subfolder named after it, as PEFT lays them out.
    /// </summary>
    public void SavePretrained(string directory)
    {
        foreach (var name in _configs.Keys) AdapterName.Validate(name);
        foreach (var name in _configs.Keys)
            SaveAdapter(name == DefaultAdapterName || (!_configs.ContainsKey(DefaultAdapterName) && name == _configs.Keys.First())
                ? directory : Path.Combine(directory, name), name);
    }

    /// <summary>Writes one adapter folder (each file through a temp file and a rename).</summary>
    public void SaveAdapter(string directory, string adapterName = DefaultAdapterName)
    {
        AdapterName.Validate(adapterName);
        if (!_configs.TryGetValue(adapterName, out var config)) throw new PeftSharpException($"No adapter \"{adapterName}\" to save; adapters: {string.Join(", ", _configs.Keys)}.");
        var entries = AdapterTensors(adapterName, config).Select(t =>
            SafetensorsEntry.FromFloat32(KeyPrefix + t.Key, t.Value.Shape.Select(d => (long)d).ToArray(), t.Value.AsSpan().ToArray())).ToList();
        Directory.CreateDirectory(directory);
        // adapter_config.json is what makes a folder an adapter, and it is written last: the old one goes first, so a
        // kill at any moment leaves the old adapter, no adapter, or the new one, never new weights under an old config.
        string configPath = Path.Combine(directory, LoraConfig.FileName);
        if (File.Exists(configPath)) File.Delete(configPath);
        SafetensorsWriter.Write(Path.Combine(directory, WeightsFileName), entries);
        bool inference = config.InferenceMode;
        config.InferenceMode = true; // PEFT always saves inference_mode = true
        try { config.Save(directory); }
        finally { config.InferenceMode = inference; }
    }

    /// <summary>The tensors PEFT's get_peft_model_state_dict returns for an adapter, by saved key (without the prefix).</summary>
    public IReadOnlyList<KeyValuePair<string, Tensor>> AdapterTensors(string adapterName, LoraConfig? config = null)
    {
        config ??= _configs[adapterName];
        var list = new List<KeyValuePair<string, Tensor>>();
        foreach (var slot in Model.Linears)
        {
            if (slot.Layer is LoraLinear l)
            {
                if (l.HasAdapter(adapterName))
                {
                    var ad = l[adapterName];
                    list.Add(new(slot.Name + ".lora_A.weight", ad.A));
                    list.Add(new(slot.Name + ".lora_B.weight", ad.B));
                    if (ad.Magnitude != null) list.Add(new(slot.Name + ".lora_magnitude_vector", ad.Magnitude));
                }
                // PEFT's keys are the model's state_dict names: a layer it wraps holds its bias as base_layer.bias
                // (bias "all"); a layer wrapped here only to train its bias is a plain Linear there.
                if (l.TrainableBias is { } b && config.Bias == "all")
                    list.Add(new(slot.Name + (l.HasAdapter(adapterName) ? ".base_layer.bias" : ".bias"), b));
                else if (l.TrainableBias is { } lb && config.Bias == "lora_only" && l.HasAdapter(adapterName))
                    list.Add(new(slot.Name + ".bias", lb));
            }
            else if (slot.Layer is ModulesToSaveLinear w && w.Copies.TryGetValue(adapterName, out var copy))
            {
                list.Add(new(slot.Name + ".weight", copy.Weight));
                if (copy.Bias != null) list.Add(new(slot.Name + ".bias", copy.Bias));
            }
        }
        if (config.Bias == "all")
        {
            var slotParams = new HashSet<Parameter>(ReferenceEqualityComparer.Instance);
            foreach (var s in Model.Linears) slotParams.UnionWith(s.Layer.Parameters);
            foreach (var p in Model.Parameters)
                if (!slotParams.Contains(p) && p.RequiresGrad && p.Name.Contains("bias", StringComparison.Ordinal))
                    list.Add(new(p.Name, p));
        }
        return list;
    }

    /// <summary>
    /// load_adapter: reads an adapter folder onto this model under <paramref name="adapterName"/>.
    /// Every tensor is checked against the base first (module present, shape as the config's rank
    /// and the module's features imply), so an adapter made for another base fails naming the key.
    /// </summary>
    public void LoadAdapter(string directory, string adapterName = DefaultAdapterName, bool isTrainable = false)
    {
        var config = LoraConfig.Load(directory);
        config.InferenceMode = !isTrainable;
        string file = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(file))
            throw new PeftSharpException(File.Exists(Path.Combine(directory, "adapter_model.bin"))
                ? $"{directory} holds adapter_model.bin (a pickle); only {WeightsFileName} is supported: re-save it with safe_serialization=True."
                : $"No {WeightsFileName} in {directory}.");
        using var st = SafetensorsFile.Open(file);
        List<(SafetensorsTensor Tensor, KeyKind Kind, string Module)> plan;
        try
        {
            plan = PlanLoad(st, config, file);
        }
        catch (PeftSharpException e) when (!e.Message.Contains(file, StringComparison.Ordinal))
        {
            // Most often an adapter made for another base: say which adapter, and for which base it was made.
            string forBase = config.BaseModelNameOrPath is { } b ? $" (made for {b})" : "";
            throw new PeftSharpException($"adapter {directory}{forBase}: {e.Message}");
        }
        Inject(adapterName, config, new Rng(0), isTrainable, initialize: false);
        try
        {
            foreach (var (tensor, kind, module) in plan) Assign(tensor, kind, module, adapterName);
        }
        catch
        {
            DeleteAdapter(adapterName);
            throw;
        }
    }

    private enum KeyKind { LoraA, LoraB, Magnitude, Weight, Bias }

    private List<(SafetensorsTensor Tensor, KeyKind Kind, string Module)> PlanLoad(SafetensorsFile st, LoraConfig config, string file)
    {
        var slots = Model.Linears.ToDictionary(s => s.Name, StringComparer.Ordinal);
        var others = Model.Parameters.GroupBy(p => p.Name).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var match = TargetMatcher.Match(config, Model.Linears.Select(s => s.Info).ToList(), Model.Config.ModelType);
        var targeted = match.Modules.Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
        var saveNames = ModulesToSaveFor(config);
        string forBase = config.BaseModelNameOrPath is { } b ? $" (it was made for {b})" : "";
        var plan = new List<(SafetensorsTensor, KeyKind, string)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in st.Tensors)
        {
            if (!t.Name.StartsWith(KeyPrefix, StringComparison.Ordinal))
                throw new PeftSharpException($"{file}: tensor \"{t.Name}\" does not start with \"{KeyPrefix}\"; this is not a PEFT LoRA adapter file.");
            string rest = t.Name[KeyPrefix.Length..];
            (KeyKind kind, string module) = rest switch
            {
                _ when rest.EndsWith(".lora_A.weight", StringComparison.Ordinal) => (KeyKind.LoraA, rest[..^".lora_A.weight".Length]),
                _ when rest.EndsWith(".lora_B.weight", StringComparison.Ordinal) => (KeyKind.LoraB, rest[..^".lora_B.weight".Length]),
                _ when rest.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal) => (KeyKind.Magnitude, rest[..^".lora_magnitude_vector".Length]),
                _ when rest.EndsWith(".lora_magnitude_vector.weight", StringComparison.Ordinal) => (KeyKind.Magnitude, rest[..^".lora_magnitude_vector.weight".Length]),
                _ when rest.Contains(".lora_", StringComparison.Ordinal) => throw new PeftSharpException($"{file}: tensor \"{t.Name}\" is a LoRA tensor kind this version does not support (only linear lora_A/lora_B/lora_magnitude_vector)."),
                _ when rest.EndsWith(".weight", StringComparison.Ordinal) => (KeyKind.Weight, rest[..^".weight".Length]),
                _ when rest.EndsWith(".bias", StringComparison.Ordinal) => (KeyKind.Bias, rest[..^".bias".Length]),
                _ => throw new PeftSharpException($"{file}: tensor \"{t.Name}\" is not a LoRA, modules_to_save or bias tensor."),
            };
            if (kind == KeyKind.Bias && module.EndsWith(".base_layer", StringComparison.Ordinal)) module = module[..^".base_layer".Length];
            if (t.DType is not (DType.F32 or DType.BF16 or DType.F16))
                throw new PeftSharpException($"{file}: tensor \"{t.Name}\" is {t.DType}; adapters hold floating-point tensors.");
            if (!slots.TryGetValue(module, out var slot))
            {
                if (kind == KeyKind.Bias && config.Bias == "all" && others.TryGetValue(rest, out var p))
                {
                    CheckShape(file, t, [p.Length], $"{rest} has {p.Length} values");
                    plan.Add((t, kind, rest));
                    continue;
                }
                throw new PeftSharpException($"{file}: tensor \"{t.Name}\" refers to module \"{module}\", which this base model ({Model.Config.ModelType}, {Model.Linears.Count} linear modules) does not have; the adapter was made for another base model{forBase}.");
            }
            var info = slot.Info;
            switch (kind)
            {
                case KeyKind.LoraA or KeyKind.LoraB or KeyKind.Magnitude when !targeted.Contains(module):
                    throw new PeftSharpException($"{file}: tensor \"{t.Name}\" is for module {module}, which the adapter's target_modules {config.TargetModules} do not select.");
                case KeyKind.LoraA:
                    CheckShape(file, t, [config.RankFor(module), info.InFeatures], $"r = {config.RankFor(module)}, in_features = {info.InFeatures}"); break;
                case KeyKind.LoraB:
                    CheckShape(file, t, [info.OutFeatures, config.RankFor(module)], $"out_features = {info.OutFeatures}, r = {config.RankFor(module)}"); break;
                case KeyKind.Magnitude:
                    if (!config.UseDora) throw new PeftSharpException($"{file}: tensor \"{t.Name}\" is a DoRA magnitude but use_dora is false in the adapter config.");
                    CheckShape(file, t, [info.OutFeatures], $"out_features = {info.OutFeatures}"); break;
                case KeyKind.Weight:
                    if (!saveNames.Any(n => module.EndsWith(n, StringComparison.Ordinal)))
                        throw new PeftSharpException($"{file}: tensor \"{t.Name}\" is a full weight of {module}, which is not in modules_to_save.");
                    CheckShape(file, t, [info.OutFeatures, info.InFeatures], $"out_features = {info.OutFeatures}, in_features = {info.InFeatures}"); break;
                case KeyKind.Bias:
                    if (!info.HasBias) throw new PeftSharpException($"{file}: tensor \"{t.Name}\" is a bias, but module {module} of the base model has none; the adapter was made for another base model{forBase}.");
                    CheckShape(file, t, [info.OutFeatures], $"out_features = {info.OutFeatures}"); break;
            }
            plan.Add((t, kind, module));
            seen.Add(kind + ":" + module);
        }
        foreach (var m in targeted)
            foreach (var (kind, suffix) in new[] { (KeyKind.LoraA, ".lora_A.weight"), (KeyKind.LoraB, ".lora_B.weight") }
                .Concat(config.UseDora ? [(KeyKind.Magnitude, ".lora_magnitude_vector")] : []))
                if (!seen.Contains(kind + ":" + m))
                    throw new PeftSharpException($"{file}: tensor \"{KeyPrefix}{m}{suffix}\" is missing; the adapter config targets {m} but the file has no weights for it.");
        return plan;
    }

    private static void CheckShape(string file, SafetensorsTensor t, long[] expected, string why)
    {
        if (!t.Shape.AsSpan().SequenceEqual(expected))
            throw new PeftSharpException($"{file}: tensor \"{t.Name}\" has shape [{string.Join(", ", t.Shape)}] but this base model needs [{string.Join(", ", expected)}] ({why}); the adapter was made for another base model or another rank.");
    }

    private unsafe void Assign(SafetensorsTensor t, KeyKind kind, string module, string adapterName)
    {
        var slot = Model.Linears.FirstOrDefault(s => s.Name == module);
        Parameter target = (kind, slot?.Layer) switch
        {
            (KeyKind.LoraA, LoraLinear l) => l[adapterName].A,
            (KeyKind.LoraB, LoraLinear l) => l[adapterName].B,
            (KeyKind.Magnitude, LoraLinear l) => l[adapterName].Magnitude!,
            (KeyKind.Bias, LoraLinear l) => l.TrainableBias ?? throw new PeftSharpException($"{t.File.Path}: tensor \"{t.Name}\" is a bias but the adapter config has bias \"none\"."),
            (KeyKind.Weight, ModulesToSaveLinear w) => w.Copies[adapterName].Weight,
            (KeyKind.Bias, ModulesToSaveLinear w) => w.Copies[adapterName].Bias!,
            (KeyKind.Bias, null) => Model.Parameters.First(p => p.Name == module),
            _ => throw new PeftSharpException($"{t.File.Path}: tensor \"{t.Name}\" does not fit module {module} as the adapter config wraps it."),
        };
        t.ReadFloat32(target.Data);
    }
}
