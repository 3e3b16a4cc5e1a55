using System.Text.Json.Nodes;
using PeftSharp.Peft;
using PeftSharp.Training;

namespace PeftSharp.Config;

/// <summary>
/// A fine-tuning run from one YAML or JSON file with the names PEFT, TRL, transformers and
/// bitsandbytes users know, in five sections: model, lora (LoraConfig), quantization
/// (BitsAndBytesConfig), data and training (TrainingArguments / SFTConfig). A `lora` section
/// means LoRA (QLoRA with quantization.load_in_4bit); without one the run is full fine-tuning.
/// </summary>
public sealed class RunConfig
{
    public static readonly string[] Dtypes = ["auto", "float32", "bfloat16", "float16"];

    /// <summary>training.trainer's values.</summary>
    public static readonly string[] Trainers = ["sft", "reward", "dpo", "kto", "orpo", "grpo"];

    public static IReadOnlyList<SectionSpec> Sections { get; } =
    [
        new("model", "the base model", [
            new("name_or_path", ValueKind.String, "a Hugging Face model folder, or ORG/NAME in the hub cache", Nullable: false),
            new("dtype", ValueKind.Enum, "weights in memory: auto keeps the stored dtype", Allowed: Dtypes),
            new("tokenizer", ValueKind.String, "a tokenizer folder (default: the model folder)"),
        ]),
        new("lora", "PEFT's LoraConfig", [
            new("r", ValueKind.Int, "adapter rank", Min: 1),
            new("lora_alpha", ValueKind.Number, "scaling numerator: the update is scaled by lora_alpha / r", Min: 0, MinExclusive: true),
            new("target_modules", ValueKind.StringOrStringList, "module names (suffix match), a regex, or \"all-linear\""),
            new("exclude_modules", ValueKind.StringOrStringList, "modules never wrapped"),
            new("lora_dropout", ValueKind.Number, "dropout on the adapter's input", Min: 0, Max: 1, MaxExclusive: true),
            new("fan_in_fan_out", ValueKind.Bool, "weights stored [in, out] (GPT-2 Conv1D; set automatically)"),
            new("bias", ValueKind.Enum, "which biases train", Allowed: LoraConfig.BiasModes),
            new("use_rslora", ValueKind.Bool, "scale by lora_alpha / sqrt(r)"),
            new("init_lora_weights", ValueKind.BoolOrString, "true, false or \"gaussian\""),
            new("modules_to_save", ValueKind.StringList, "modules trained in full and saved with the adapter (e.g. lm_head, score)"),
            new("rank_pattern", ValueKind.Dict, "per-module ranks by regex"),
            new("alpha_pattern", ValueKind.Dict, "per-module alphas by regex"),
            new("layers_to_transform", ValueKind.IntOrIntList, "only these layer indices"),
            new("layers_pattern", ValueKind.StringOrStringList, "the name of the layer list (h, layers)"),
            new("use_dora", ValueKind.Bool, "weight-decomposed LoRA (DoRA)"),
            new("task_type", ValueKind.Enum, "the task", Allowed: LoraConfig.TaskTypes),
            new("inference_mode", ValueKind.Bool, "load the adapter frozen"),
        ]),
        new("quantization", "bitsandbytes' BitsAndBytesConfig (QLoRA)", [
            new("load_in_4bit", ValueKind.Bool, "keep the frozen base in 4 bits"),
            new("load_in_8bit", ValueKind.Bool, "8-bit base (not supported; use load_in_4bit)"),
            new("bnb_4bit_quant_type", ValueKind.Enum, "4-bit code: nf4 (recommended) or fp4", Allowed: ["nf4", "fp4"]),
            new("bnb_4bit_use_double_quant", ValueKind.Bool, "quantize the quantization scales too (saves ~0.37 bit/param)"),
            new("bnb_4bit_compute_dtype", ValueKind.Enum, "dtype of the dequantized weights in the matmul", Allowed: ["float32", "bfloat16", "float16"]),
            new("bnb_4bit_quant_storage", ValueKind.Enum, "element type the packed 4-bit bytes are saved as (the bytes are the same)", Allowed: PeftSharp.Quantization.BitsAndBytesConfig.AllowedQuantStorage),
            new("llm_int8_skip_modules", ValueKind.StringList, "modules kept unquantized (default: the output layer)"),
        ]),
        new("data", "the datasets and SFTConfig's data options", DataArguments.Keys),
        new("training", "TrainingArguments / SFTConfig", [.. TrainingArguments.Keys,
            new KeySpec("trainer", ValueKind.Enum, "the objective: sft (default), reward, dpo, kto, orpo or grpo; each reads its own section", Allowed: Trainers)]),
        .. PreferenceSections.Specs,
        GrpoSection.Spec,
    ];

    /// <summary>Old or misplaced names accepted with a notice: (section, key) → (section, key, why).</summary>
    private static readonly Dictionary<(string, string), (string Section, string Key, string Why)> Renames = new()
    {
        [("training", "max_seq_length")] = ("data", "max_length", "TRL renamed max_seq_length to max_length"),
        [("data", "max_seq_length")] = ("data", "max_length", "TRL renamed max_seq_length to max_length"),
        [("training", "evaluation_strategy")] = ("training", "eval_strategy", "transformers renamed evaluation_strategy to eval_strategy"),
        [("training", "max_length")] = ("data", "max_length", "max_length is a data option here"),
        [("training", "packing")] = ("data", "packing", "packing is a data option here"),
        [("training", "dataset_text_field")] = ("data", "dataset_text_field", "dataset_text_field is a data option here"),
        [("training", "completion_only_loss")] = ("data", "completion_only_loss", "completion_only_loss is a data option here"),
        [("training", "assistant_only_loss")] = ("data", "assistant_only_loss", "assistant_only_loss is a data option here"),
        [("model", "torch_dtype")] = ("model", "dtype", "transformers renamed torch_dtype to dtype"),
        [("training", "eos_token")] = ("data", "eos_token", "eos_token is a data option here"),
        [("training", "chat_template_path")] = ("data", "chat_template_path", "chat_template_path is a data option here"),
        [("training", "packing_strategy")] = ("data", "packing_strategy", "packing_strategy is a data option here"),
        [("training", "padding_free")] = ("data", "padding_free", "padding_free is a data option here"),
    };

    public required string ModelNameOrPath { get; init; }
    public string Dtype { get; init; } = "auto";
    public string? Tokenizer { get; init; }
    /// <summary>Null for full fine-tuning.</summary>
    public LoraConfig? Lora { get; init; }
    /// <summary>The quantization section as given (BitsAndBytesConfig's names); null when absent.</summary>
    public JsonObject? Quantization { get; init; }
    public bool LoadIn4Bit => Quantization?.Bool("load_in_4bit", false) ?? false;
    public required DataArguments Data { get; init; }
    public required TrainingArguments Training { get; init; }
    /// <summary>What the loader accepted but wants the user to know (renamed keys).</summary>
    public IReadOnlyList<string> Notices { get; init; } = [];
    /// <summary>The effective configuration after renames and overrides, for the report and checkpoints.</summary>
    public required JsonObject Effective { get; init; }

    /// <summary>training.trainer: sft, reward, dpo, kto or orpo.</summary>
    public string Trainer { get; init; } = "sft";
    /// <summary>The options of the preference trainer's section (dpo, kto, orpo or reward); null for sft.</summary>
    public Training.Preference.PreferenceOptions? Preference { get; init; }

    /// <summary>The grpo section (training.trainer: grpo), else null.</summary>
    public Training.Rl.GrpoOptions? Grpo { get; init; }

    public string Method => Lora == null ? "full" : LoadIn4Bit ? "qlora" : "lora";

    public static RunConfig Load(string path, IEnumerable<string>? overrides = null)
    {
        var tree = ConfigTree.LoadFile(path);
        // Data files given relative to the config file are found beside it (set through --set: relative to the working directory).
        if (tree["data"] is JsonObject data)
            foreach (var key in new[] { "train_file", "eval_file", "chat_template_path" })
                if (data[key] is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.String && !Path.IsPathRooted(v.GetValue<string>()))
                    data[key] = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, v.GetValue<string>()));
        // A relative dataset_name that names a folder beside the config file is that folder (else a hub id or a path from the working directory).
        if (tree["data"] is JsonObject d && d["dataset_name"] is JsonValue n && n.GetValueKind() == System.Text.Json.JsonValueKind.String
            && !Path.IsPathRooted(n.GetValue<string>()) && Directory.Exists(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, n.GetValue<string>())))
            d["dataset_name"] = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, n.GetValue<string>()));
        // So are reward models and JSON schemas named in grpo.reward_funcs (reward_model:PATH, json:SCHEMA) when they are beside it.
        if (tree["grpo"] is JsonObject g && g["reward_funcs"] is JsonArray funcs)
            for (int i = 0; i < funcs.Count; i++)
                foreach (var kind in new[] { "reward_model:", "json:" })
                    if (funcs[i] is JsonValue f && f.TryGetValue<string>(out var spec) && spec.StartsWith(kind, StringComparison.Ordinal)
                        && spec[kind.Length..] is var rm && !Path.IsPathRooted(rm)
                        && Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, rm) is var beside && (Directory.Exists(beside) || File.Exists(beside)))
                        funcs[i] = kind + Path.GetFullPath(beside);
        try { return FromTree(tree, overrides); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{path}: {e.Message}"); }
    }

    public static RunConfig FromTree(JsonObject tree, IEnumerable<string>? overrides = null)
    {
        tree = (JsonObject)tree.DeepClone();
        foreach (var o in overrides ?? []) ApplyOverride(tree, o);
        var notices = new List<string>();
        bool hasLora = tree["lora"] != null, hasQuant = tree["quantization"] != null;
        var sections = Normalize(tree, notices);

        string trainer = sections["training"].Str("trainer", "sft")!;
        var preference = PreferenceSections.Read(trainer, sections);
        var grpo = GrpoSection.Read(trainer, sections);
        var model = sections["model"];
        var name = model.Str("name_or_path") ?? throw new PeftSharpException("model.name_or_path is required: a Hugging Face model folder or ORG/NAME.");

        LoraConfig? lora = null;
        if (hasLora)
        {
            var loraJson = (JsonObject)sections["lora"].DeepClone();
            try { lora = LoraConfig.FromJson(loraJson); }
            catch (PeftSharpException e) { throw new PeftSharpException(e.Message.StartsWith("lora:") ? e.Message : "lora: " + e.Message); }
            lora.InferenceMode = false;
            // The user guide's default: a causal-LM run writes task_type CAUSAL_LM, which PEFT's AutoPeftModelForCausalLM needs.
            lora.TaskType ??= trainer == "reward" ? "SEQ_CLS" : "CAUSAL_LM";
            if (trainer == "reward" && lora.TaskType != "SEQ_CLS")
                throw new PeftSharpException($"lora.task_type {lora.TaskType}: the reward trainer trains a sequence-classification model (SEQ_CLS).");
            if (trainer != "reward" && lora.TaskType != "CAUSAL_LM")
                throw new PeftSharpException($"lora.task_type {lora.TaskType}: the {trainer} trainer trains causal language models (CAUSAL_LM); " +
                    "sequence classification is trained by training.trainer: reward.");
            if (trainer == "reward")
            {
                // PEFT's SEQ_CLS task adds the classification head to modules_to_save.
                lora.ModulesToSave ??= [];
                if (!lora.ModulesToSave.Contains("score")) lora.ModulesToSave.Add("score");
            }
        }

        JsonObject? quant = hasQuant ? sections["quantization"] : null;
        if (quant?.Bool("load_in_8bit", false) == true)
            throw new PeftSharpException("quantization.load_in_8bit is not supported; use load_in_4bit: true (QLoRA, nf4).");
        if (quant?.Bool("load_in_4bit", false) == true && lora == null)
            throw new PeftSharpException("quantization.load_in_4bit freezes the base in 4 bits, so it needs a lora section to train adapters (QLoRA).");

        var training = TrainingArguments.FromJson(sections["training"]);
        training.Validate(notices);
        if (quant?.Bool("load_in_4bit", false) == true && sections["training"]["gradient_checkpointing"] == null)
        {
            // PEFT's prepare_model_for_kbit_training(use_gradient_checkpointing=True), which QLoRA recipes call.
            training.GradientCheckpointing = true;
            notices.Add("load_in_4bit: gradient_checkpointing is on, as prepare_model_for_kbit_training sets it (training.gradient_checkpointing: false turns it off).");
        }
        var data = DataArguments.FromJson(sections["data"]);
        if (data.TrainFile == null && data.DatasetName == null)
            throw new PeftSharpException("data.train_file or data.dataset_name is required.");
        if (data.TrainFile != null && data.DatasetName != null)
            throw new PeftSharpException("data.train_file and data.dataset_name are both set; keep one (train_file reads one file, dataset_name a dataset folder with splits).");

        return new RunConfig
        {
            ModelNameOrPath = name,
            Dtype = model.Str("dtype", "auto")!,
            Tokenizer = model.Str("tokenizer"),
            Lora = lora,
            Quantization = quant,
            Data = data,
            Training = training,
            Trainer = trainer,
            Preference = preference,
            Grpo = grpo,
            Notices = notices,
            Effective = tree,
        };
    }

    /// <summary>Validates every key against its section, applies renames (with notices) and returns each section, empty when absent.</summary>
    private static Dictionary<string, JsonObject> Normalize(JsonObject tree, List<string> notices)
    {
        var names = Sections.Select(s => s.Name).ToList();
        foreach (var (sectionName, _) in tree.ToList())
            if (!names.Contains(sectionName))
            {
                var owner = Sections.FirstOrDefault(s => s.Keys.ContainsKey(sectionName));
                throw new PeftSharpException(owner != null
                    ? $"\"{sectionName}\" is a key of the \"{owner.Name}\" section; put it under {owner.Name}:."
                    : $"unknown section \"{sectionName}\".{Suggestions.DidYouMean(sectionName, names)} Sections: {string.Join(", ", names)}.");
            }

        var result = names.ToDictionary(n => n, n => tree[n] switch
        {
            null => new JsonObject(),
            JsonObject o => o,
            var other => throw new PeftSharpException($"section \"{n}\" must be a mapping of keys, got {other.ToJsonString()}."),
        });
        foreach (var n in names) tree[n] = result[n];

        foreach (var spec in Sections)
        {
            var section = result[spec.Name];
            foreach (var (key, value) in section.ToList())
            {
                if (Renames.TryGetValue((spec.Name, key), out var to))
                {
                    section.Remove(key);
                    var target = result[to.Section];
                    if (target.ContainsKey(to.Key))
                        throw new PeftSharpException($"{spec.Name}.{key} and {to.Section}.{to.Key} are both set; keep only {to.Section}.{to.Key}.");
                    target[to.Key] = value;
                    notices.Add($"{spec.Name}.{key} is read as {to.Section}.{to.Key} ({to.Why}).");
                    continue;
                }
                if (spec.Name == "training" && key == "warmup_ratio")
                    notices.Add("training.warmup_ratio is deprecated in transformers; warmup_steps below 1 is the same fraction.");
                if (!spec.Keys.TryGetValue(key, out var keySpec))
                {
                    var elsewhere = Sections.FirstOrDefault(s => s != spec && s.Keys.ContainsKey(key));
                    throw new PeftSharpException(elsewhere != null
                        ? $"{spec.Name}.{key}: \"{key}\" belongs in the \"{elsewhere.Name}\" section."
                        : $"{spec.Name}: unknown key \"{key}\".{Suggestions.DidYouMean(key, spec.Keys.Keys)} Valid keys: {string.Join(", ", spec.Keys.Keys)}.");
                }
            }
        }
        foreach (var spec in Sections)
            foreach (var (key, value) in result[spec.Name])
                if (spec.Keys[key].Check(value) is { } expected)
                    throw new PeftSharpException($"{spec.Name}.{key} must be {expected}, got {value?.ToJsonString() ?? "null"}.");
        return result;
    }

    /// <summary>`section.key=value` (or a bare key that only one section has), the value typed as YAML would type it.</summary>
    public static void ApplyOverride(JsonObject tree, string assignment)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new PeftSharpException($"--set \"{assignment}\": expected section.key=value, e.g. lora.r=16.");
        var path = assignment[..eq].Trim();
        var value = ConfigTree.ParseScalar(assignment[(eq + 1)..].Trim());
        string section, key;
        int dot = path.IndexOf('.');
        if (dot > 0)
        {
            section = path[..dot];
            key = path[(dot + 1)..];
        }
        else
        {
            var owners = Sections.Where(s => s.Keys.ContainsKey(path)).ToList();
            if (owners.Count != 1)
                throw new PeftSharpException(owners.Count == 0
                    ? $"--set {path}: no section has a key \"{path}\"; write section.key=value."
                    : $"--set {path}: several sections have \"{path}\" ({string.Join(", ", owners.Select(o => o.Name))}); write section.key=value.");
            section = owners[0].Name;
            key = path;
        }
        if (tree[section] is not JsonObject target)
            tree[section] = target = [];
        target[key] = value;
    }
}
