using System.Text.Json.Nodes;
using PeftSharp.Training.Preference;

namespace PeftSharp.Config;

/// <summary>
/// The preference trainers' sections of the run config (reward, dpo, kto, orpo), with TRL's RewardConfig, DPOConfig, KTOConfig
/// and ORPOConfig option names; training.trainer picks which one is read.
/// </summary>
internal static class PreferenceSections
{
    private static KeySpec Beta(string what) => new("beta", ValueKind.Number, what, Min: 0, MinExclusive: true);
    private static readonly KeySpec MaxPrompt = new("max_prompt_length", ValueKind.Int, "a longer prompt keeps its last tokens (default 512; null: no limit)", Min: 1);
    private static readonly KeySpec MaxCompletion = new("max_completion_length", ValueKind.Int, "a longer completion keeps its first tokens (default: no limit)", Min: 1);
    private static readonly KeySpec MaxLength = new("max_length", ValueKind.Int, "prompt + completion beyond it is truncated by truncation_mode (default 1024; null: no limit)", Min: 1);
    private static readonly KeySpec Truncation = new("truncation_mode", ValueKind.Enum, "keep_end (default: the prompt's start goes) or keep_start", Allowed: PreferenceOptions.TruncationModes);
    private static readonly KeySpec DisableDropout = new("disable_dropout", ValueKind.Bool, "no dropout (lora_dropout included) in the policy's forward (default true, as TRL)");
    private static readonly KeySpec Precompute = new("precompute_ref_log_probs", ValueKind.Bool, "compute the reference log-probs of every example once before training");
    private static readonly KeySpec RefAdapter = new("ref_adapter", ValueKind.String, "a PEFT adapter folder loaded frozen as the reference (TRL's ref_adapter_name; default: the base with adapters off)");

    public static IReadOnlyList<SectionSpec> Specs { get; } =
    [
        new("reward", "TRL's RewardConfig (training.trainer: reward)", [
            new("center_rewards_coefficient", ValueKind.Number, "weight of mean((r_chosen + r_rejected)²), which centres the rewards on 0", Min: 0),
            MaxLength, DisableDropout,
        ]),
        new("dpo", "TRL's DPOConfig (training.trainer: dpo)", [
            Beta("the KL penalty's weight, the temperature of the implicit reward (default 0.1)"),
            new("loss_type", ValueKind.Enum, "sigmoid (DPO, default), ipo, hinge (SLiC) or robust", Allowed: PreferenceOptions.LossTypes),
            new("label_smoothing", ValueKind.Number, "sigmoid/robust: the probability that a preference label is flipped", Min: 0, Max: 0.5, MaxExclusive: true),
            new("rpo_alpha", ValueKind.Number, "weight of the chosen completions' NLL added to the loss (RPO)", Min: 0),
            new("reference_free", ValueKind.Bool, "ignore the reference (log-probs 0)"),
            Precompute, RefAdapter, DisableDropout, MaxPrompt, MaxCompletion, MaxLength, Truncation,
        ]),
        new("kto", "TRL's KTOConfig (training.trainer: kto)", [
            Beta("the KL penalty's weight (default 0.1)"),
            new("desirable_weight", ValueKind.Number, "weight of the desirable (label true) examples' losses (default 1)", Min: 0, MinExclusive: true),
            new("undesirable_weight", ValueKind.Number, "weight of the undesirable (label false) examples' losses (default 1)", Min: 0, MinExclusive: true),
            Precompute, RefAdapter, DisableDropout, MaxPrompt, MaxCompletion, MaxLength, Truncation,
        ]),
        new("orpo", "TRL's ORPOConfig (training.trainer: orpo)", [
            Beta("weight of the odds-ratio term, λ in the paper (default 0.1)"),
            DisableDropout, MaxPrompt, MaxCompletion, MaxLength, Truncation,
        ]),
    ];

    /// <summary>The chosen trainer's options (its section, defaults where absent); a section of another trainer is an error.</summary>
    public static PreferenceOptions? Read(string trainer, Dictionary<string, JsonObject> sections)
    {
        foreach (var spec in Specs)
            if (spec.Name != trainer && sections[spec.Name].Count > 0)
                throw new PeftSharpException($"the {spec.Name} section is for training.trainer: {spec.Name}, but this run's trainer is {trainer}.");
        if (trainer is "sft" or "grpo") return null;
        var o = sections[trainer];
        var d = new PreferenceOptions();
        int? Length(string key, int? fallback) => o.ContainsKey(key) ? o.IntOrNull(key) : fallback;
        var options = new PreferenceOptions
        {
            Beta = o.Num("beta", d.Beta),
            LossType = o.Str("loss_type", d.LossType)!,
            LabelSmoothing = o.Num("label_smoothing", d.LabelSmoothing),
            RpoAlpha = o.NumOrNull("rpo_alpha"),
            ReferenceFree = o.Bool("reference_free", d.ReferenceFree),
            PrecomputeRefLogProbs = o.Bool("precompute_ref_log_probs", d.PrecomputeRefLogProbs),
            RefAdapter = o.Str("ref_adapter"),
            DisableDropout = o.Bool("disable_dropout", d.DisableDropout),
            MaxPromptLength = Length("max_prompt_length", d.MaxPromptLength),
            MaxCompletionLength = Length("max_completion_length", d.MaxCompletionLength),
            MaxLength = Length("max_length", d.MaxLength),
            TruncationMode = o.Str("truncation_mode", d.TruncationMode)!,
            DesirableWeight = o.Num("desirable_weight", d.DesirableWeight),
            UndesirableWeight = o.Num("undesirable_weight", d.UndesirableWeight),
            CenterRewardsCoefficient = o.NumOrNull("center_rewards_coefficient"),
        };
        options.Validate(trainer);
        return options;
    }
}
