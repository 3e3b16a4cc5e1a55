using PeftSharp.Models;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Formats;

namespace PeftSharp.Peft;

/// <summary>Which modules get LoRA: a list (exact name or `.`-suffix match), a regex (full match) or "all-linear".</summary>
public sealed record TargetModules
{
    public const string AllLinearKeyword = "all-linear";

    private TargetModules(IReadOnlyList<string>? names, string? pattern) { Names = names; Pattern = pattern; }

    /// <summary>Module names; a key matches when it equals one or ends with "." + one.</summary>
    public IReadOnlyList<string>? Names { get; }

    /// <summary>A regex that must match the whole module key (PEFT's string form).</summary>
    public string? Pattern { get; }

    public bool IsAllLinear => Pattern == AllLinearKeyword;

    public static TargetModules FromNames(IEnumerable<string> names) => new(names.ToArray(), null);
    public static TargetModules FromPattern(string pattern) => new(null, pattern);
    public static TargetModules AllLinear { get; } = new(null, AllLinearKeyword);

    public override string ToString() => Names != null ? "[" + string.Join(", ", Names) + "]" : $"\"{Pattern}\"";
}

/// <summary>
/// PEFT's LoraConfig: the same names, defaults and meaning, read from and written to
/// adapter_config.json exactly as PEFT writes it. Keys this version does not know (newer PEFT
/// fields) are kept and written back unchanged.
/// </summary>
public sealed class LoraConfig
{
    public const string FileName = "adapter_config.json";

    /// <summary>Model types whose default target modules we know (PEFT's mapping, from each <see cref="ModelFamily"/>).</summary>
    public static IReadOnlyDictionary<string, string[]> DefaultTargetModules { get; } =
        ModelFamily.All.SelectMany(f => f.ModelTypes.Select(t => KeyValuePair.Create(t, f.DefaultTargetModules.ToArray()))).ToDictionary();

    public static IReadOnlyList<string> TaskTypes { get; } = ["CAUSAL_LM", "SEQ_CLS", "TOKEN_CLS", "SEQ_2_SEQ_LM", "QUESTION_ANS", "FEATURE_EXTRACTION"];
    public static IReadOnlyList<string> BiasModes { get; } = ["none", "all", "lora_only"];

    public int R { get; set; } = 8;
    public double LoraAlpha { get; set; } = 8;
    public TargetModules? TargetModules { get; set; }
    public TargetModules? ExcludeModules { get; set; }
    public double LoraDropout { get; set; }
    public bool FanInFanOut { get; set; }
    public string Bias { get; set; } = "none";
    public bool UseRslora { get; set; }
    /// <summary>"true" (A kaiming-uniform, B zero), "gaussian" (A normal(0, 1/r), B zero) or "false" (both random; for tests).</summary>
    public string InitLoraWeights { get; set; } = "true";
    public List<string>? ModulesToSave { get; set; }
    public Dictionary<string, int> RankPattern { get; set; } = [];
    public Dictionary<string, double> AlphaPattern { get; set; } = [];
    public List<int>? LayersToTransform { get; set; }
    public List<string>? LayersPattern { get; set; }
    public bool UseDora { get; set; }
    public string? TaskType { get; set; } = "CAUSAL_LM";
    public bool InferenceMode { get; set; }
    public string? BaseModelNameOrPath { get; set; }
    public string? Revision { get; set; }

    /// <summary>The JSON this config was read from (or PEFT's default key set), so unknown keys survive a round trip.</summary>
    private JsonObject _raw = DefaultRaw();

    /// <summary>The rank of a module, after rank_pattern.</summary>
    public int RankFor(string moduleKey) =>
        PatternKey(RankPattern.Keys, moduleKey) is { } k ? RankPattern[k] : R;

    /// <summary>The alpha of a module, after alpha_pattern.</summary>
    public double AlphaFor(string moduleKey) =>
        PatternKey(AlphaPattern.Keys, moduleKey) is { } k ? AlphaPattern[k] : LoraAlpha;

    /// <summary>lora_alpha / r, or lora_alpha / √r with use_rslora.</summary>
    public double ScalingFor(string moduleKey)
    {
        int r = RankFor(moduleKey);
        double alpha = AlphaFor(moduleKey);
        return UseRslora ? alpha / Math.Sqrt(r) : alpha / r;
    }

    /// <summary>PEFT's get_pattern_key: the first pattern p (in order) with re.match(r"(.*\.)?(p)$", key).</summary>
    private static string? PatternKey(IEnumerable<string> patterns, string key)
    {
        foreach (var p in patterns)
            if (System.Text.RegularExpressions.Regex.IsMatch(key, $"^(.*\\.)?({p})$"))
                return p;
        return null;
    }

    /// <summary>Checks ranges and enumerations; throws naming the key and the allowed values.</summary>
    public void Validate()
    {
        if (R <= 0) throw new PeftSharpException($"lora: r must be a positive integer, got {R}.");
        if (!(LoraAlpha > 0) || double.IsInfinity(LoraAlpha)) throw new PeftSharpException($"lora: lora_alpha must be a positive number, got {LoraAlpha}.");
        if (!(LoraDropout >= 0 && LoraDropout < 1)) throw new PeftSharpException($"lora: lora_dropout must be in [0, 1), got {LoraDropout}.");
        if (!BiasModes.Contains(Bias)) throw new PeftSharpException($"lora: bias must be one of {string.Join(", ", BiasModes.Select(b => $"\"{b}\""))}, got \"{Bias}\".");
        if (TaskType != null && !TaskTypes.Contains(TaskType)) throw new PeftSharpException($"lora: task_type must be one of {string.Join(", ", TaskTypes)}, got \"{TaskType}\".");
        if (InitLoraWeights is not ("true" or "false" or "gaussian"))
            throw new PeftSharpException($"lora: init_lora_weights \"{InitLoraWeights}\" is not supported; use true, false or \"gaussian\".");
        foreach (var (k, v) in RankPattern)
            if (v <= 0) throw new PeftSharpException($"lora: rank_pattern[\"{k}\"] must be a positive integer, got {v}.");
        foreach (var (k, v) in AlphaPattern)
            if (!(v > 0)) throw new PeftSharpException($"lora: alpha_pattern[\"{k}\"] must be positive, got {v}.");
        if (TargetModules?.Pattern is { } pattern && !TargetModules.IsAllLinear) CheckRegex("target_modules", pattern);
        if (ExcludeModules?.Pattern is { } ex) CheckRegex("exclude_modules", ex);
    }

    private static void CheckRegex(string key, string pattern)
    {
        try { _ = new System.Text.RegularExpressions.Regex(pattern); }
        catch (ArgumentException e) { throw new PeftSharpException($"lora: {key} \"{pattern}\" is not a valid regular expression: {e.Message}"); }
    }

    public static LoraConfig Load(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, FileName);
        if (!File.Exists(path)) throw new PeftSharpException($"No adapter config at {path}: an adapter folder holds {FileName} and adapter_model.safetensors.");
        var obj = JsonInput.ReadObjectFile(path);
        try { return FromJson(obj); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{path}: {e.Message}"); }
    }

    /// <summary>An integer layer index however the JSON or YAML reader typed it (int, long or a whole double).</summary>
    private static int? LayerIndex(JsonNode? n) =>
        Config.KeySpec.AsNumber(n) is double d && d == Math.Floor(d) && d >= 0 && d <= int.MaxValue ? (int)d : null;

    /// <summary>
    /// PEFT LoraConfig fields PeftSharp does not implement, each with the value that means "unused". A file that sets one
    /// to anything else is refused by name: loading it would silently give another model's outputs.
    /// </summary>
    private static readonly (string Key, Func<JsonNode?, bool> Unused, string What)[] Unimplemented =
    [
        ("lora_bias", n => n is null || n.GetValueKind() == JsonValueKind.False, "a trainable bias on lora_B"),
        ("layer_replication", n => n is null, "layer replication"),
        ("trainable_token_indices", n => n is null, "trainable token embeddings"),
        ("target_parameters", n => n is null || n is JsonArray { Count: 0 }, "LoRA on nn.Parameter targets"),
        ("use_qalora", n => n is null || n.GetValueKind() == JsonValueKind.False, "QA-LoRA"),
        ("alora_invocation_tokens", n => n is null, "activated LoRA (aLoRA)"),
        ("megatron_config", n => n is null, "Megatron parallel layers"),
        ("loftq_config", n => n is null || n is JsonObject { Count: 0 }, "LoftQ initialisation"),
        ("eva_config", n => n is null, "EVA initialisation"),
        ("corda_config", n => n is null, "CorDA initialisation"),
    ];

    public static LoraConfig FromJson(JsonObject obj)
    {
        var peftType = Str(obj, "peft_type");
        if (peftType != null && peftType != "LORA")
            throw new PeftSharpException($"peft_type is \"{peftType}\"; only \"LORA\" adapters are supported.");
        foreach (var (key, unused, what) in Unimplemented)
            if (obj.ContainsKey(key) && !unused(obj[key]))
                throw new PeftSharpException($"{key} is {obj[key]!.ToJsonString()}: PeftSharp does not implement {what}; " +
                    "this adapter would give other outputs than PEFT's. Use an adapter without it.");
        var c = new LoraConfig { _raw = (JsonObject)obj.DeepClone() };
        c.R = Int(obj, "r") ?? c.R;
        c.LoraAlpha = Num(obj, "lora_alpha") ?? c.LoraAlpha;
        c.TargetModules = Targets(obj, "target_modules");
        c.ExcludeModules = Targets(obj, "exclude_modules");
        c.LoraDropout = Num(obj, "lora_dropout") ?? 0;
        c.FanInFanOut = Bool(obj, "fan_in_fan_out") ?? false;
        c.Bias = Str(obj, "bias") ?? "none";
        c.UseRslora = Bool(obj, "use_rslora") ?? false;
        c.InitLoraWeights = obj["init_lora_weights"] switch
        {
            null => "true",
            JsonValue v when v.GetValueKind() == JsonValueKind.True => "true",
            JsonValue v when v.GetValueKind() == JsonValueKind.False => "false",
            JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
            var other => throw new PeftSharpException($"init_lora_weights must be true, false or a string, got {other.ToJsonString()}."),
        };
        c.ModulesToSave = StrList(obj, "modules_to_save");
        c.RankPattern = obj["rank_pattern"] is JsonObject rp ? rp.ToDictionary(kv => kv.Key, kv => (int)(Num(rp, kv.Key) ?? 0)) : [];
        c.AlphaPattern = obj["alpha_pattern"] is JsonObject ap ? ap.ToDictionary(kv => kv.Key, kv => Num(ap, kv.Key) ?? 0) : [];
        c.LayersToTransform = obj["layers_to_transform"] switch
        {
            null => null,
            JsonArray a => a.Select((n, i) => LayerIndex(n) ?? throw new PeftSharpException($"layers_to_transform[{i}] must be a non-negative integer, got {n?.ToJsonString() ?? "null"}.")).ToList(),
            JsonValue v when LayerIndex(v) is int x => [x],
            var other => throw new PeftSharpException($"layers_to_transform must be an integer or a list of integers, got {other.ToJsonString()}."),
        };
        c.LayersPattern = obj["layers_pattern"] switch
        {
            null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.String => [v.GetValue<string>()],
            JsonArray => StrList(obj, "layers_pattern"),
            var other => throw new PeftSharpException($"layers_pattern must be a string or a list of strings, got {other.ToJsonString()}."),
        };
        c.UseDora = Bool(obj, "use_dora") ?? false;
        c.TaskType = Str(obj, "task_type");
        c.InferenceMode = Bool(obj, "inference_mode") ?? false;
        c.BaseModelNameOrPath = Str(obj, "base_model_name_or_path");
        c.Revision = Str(obj, "revision");
        c.Validate();
        return c;
    }

    /// <summary>The adapter_config.json object: PEFT's keys, unknown keys kept.</summary>
    public JsonObject ToJson()
    {
        var o = (JsonObject)_raw.DeepClone();
        o["peft_type"] = "LORA";
        o["r"] = R;
        o["lora_alpha"] = NumberNode(LoraAlpha);
        o["target_modules"] = TargetsNode(TargetModules);
        o["exclude_modules"] = TargetsNode(ExcludeModules);
        o["lora_dropout"] = LoraDropout;
        o["fan_in_fan_out"] = FanInFanOut;
        o["bias"] = Bias;
        o["use_rslora"] = UseRslora;
        o["init_lora_weights"] = InitLoraWeights switch { "true" => true, "false" => false, var s => (JsonNode)s };
        o["modules_to_save"] = ModulesToSave == null ? null : new JsonArray(ModulesToSave.Select(s => (JsonNode?)s).ToArray());
        o["rank_pattern"] = new JsonObject(RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
        o["alpha_pattern"] = new JsonObject(AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, NumberNode(kv.Value))));
        o["layers_to_transform"] = LayersToTransform == null ? null : new JsonArray(LayersToTransform.Select(i => (JsonNode?)i).ToArray());
        o["layers_pattern"] = LayersPattern switch
        {
            null => null,
            [var single] when _raw["layers_pattern"] is not JsonArray => single,
            var list => new JsonArray(list.Select(s => (JsonNode?)s).ToArray()),
        };
        o["use_dora"] = UseDora;
        o["task_type"] = TaskType;
        o["inference_mode"] = InferenceMode;
        o["base_model_name_or_path"] = BaseModelNameOrPath;
        o["revision"] = Revision;
        // A file from an older PEFT lacks some keys: leave them out while they are unset.
        foreach (var key in o.Where(kv => kv.Value == null && !_raw.ContainsKey(kv.Key)).Select(kv => kv.Key).ToList())
            o.Remove(key);
        return o;
    }

    /// <summary>Writes adapter_config.json into <paramref name="directory"/> (temp file + rename).</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), PythonJson.Serialize(ToJson()));
    }

    private static JsonNode? NumberNode(double v) =>
        v == Math.Floor(v) && Math.Abs(v) < 1e15 ? JsonValue.Create((long)v) : JsonValue.Create(v);

    private static JsonNode? TargetsNode(TargetModules? t) => t switch
    {
        null => null,
        { Names: { } names } => new JsonArray(names.Order(StringComparer.Ordinal).Select(s => (JsonNode?)s).ToArray()),
        { Pattern: { } p } => p,
        _ => null,
    };

    private static TargetModules? Targets(JsonObject obj, string key) => obj[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>() == TargetModules.AllLinearKeyword
            ? Peft.TargetModules.AllLinear : Peft.TargetModules.FromPattern(v.GetValue<string>()),
        JsonArray => Peft.TargetModules.FromNames(StrList(obj, key)!),
        var other => throw new PeftSharpException($"{key} must be a list of module names or a regex string, got {other.ToJsonString()}."),
    };

    private static string? Str(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        var other => throw new PeftSharpException($"{key} must be a string, got {other.ToJsonString()}."),
    };

    private static List<string>? StrList(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonArray a => a.Select((n, i) => n is JsonValue v && v.GetValueKind() == JsonValueKind.String
            ? v.GetValue<string>() : throw new PeftSharpException($"{key}[{i}] must be a string.")).ToList(),
        var other => throw new PeftSharpException($"{key} must be a list of strings, got {other.ToJsonString()}."),
    };

    private static double? Num(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when AsDouble(v) is { } d => d,
        var other => throw new PeftSharpException($"{key} must be a number, got {other.ToJsonString()}."),
    };

    private static int? Int(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when AsDouble(v) is { } d && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue => (int)d,
        var other => throw new PeftSharpException($"{key} must be an integer, got {other.ToJsonString()}."),
    };

    /// <summary>A number node's value, whether it was parsed or built from a .NET value.</summary>
    private static double? AsDouble(JsonValue v)
    {
        if (v.GetValueKind() != JsonValueKind.Number) return null;
        if (v.TryGetValue(out double d)) return d;
        if (v.TryGetValue(out long l)) return l;
        if (v.TryGetValue(out int i)) return i;
        if (v.TryGetValue(out float f)) return f;
        return null;
    }

    private static bool? Bool(JsonObject o, string key) => o[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() is JsonValueKind.True or JsonValueKind.False => v.GetValue<bool>(),
        var other => throw new PeftSharpException($"{key} must be true or false, got {other.ToJsonString()}."),
    };

    /// <summary>The key set PEFT 0.17 writes, with its defaults, for configs made from scratch.</summary>
    private static JsonObject DefaultRaw() => new()
    {
        ["alpha_pattern"] = new JsonObject(), ["auto_mapping"] = null, ["base_model_name_or_path"] = null,
        ["bias"] = "none", ["corda_config"] = null, ["eva_config"] = null, ["exclude_modules"] = null,
        ["fan_in_fan_out"] = false, ["inference_mode"] = true, ["init_lora_weights"] = true,
        ["layer_replication"] = null, ["layers_pattern"] = null, ["layers_to_transform"] = null,
        ["loftq_config"] = new JsonObject(), ["lora_alpha"] = 8, ["lora_bias"] = false, ["lora_dropout"] = 0.0,
        ["megatron_config"] = null, ["megatron_core"] = "megatron.core", ["modules_to_save"] = null,
        ["peft_type"] = "LORA", ["qalora_group_size"] = 16, ["r"] = 8, ["rank_pattern"] = new JsonObject(),
        ["revision"] = null, ["target_modules"] = null, ["target_parameters"] = null, ["task_type"] = "CAUSAL_LM",
        ["trainable_token_indices"] = null, ["use_dora"] = false, ["use_qalora"] = false, ["use_rslora"] = false,
    };
}
