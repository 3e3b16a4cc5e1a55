namespace PeftSharp.Training.Preference;

/// <summary>
/// The options of TRL's DPOConfig, KTOConfig, ORPOConfig and RewardConfig, by their names (each trainer reads its own;
/// the defaults are TRL's).
/// </summary>
public sealed record PreferenceOptions
{
    public static readonly string[] LossTypes = ["sigmoid", "ipo", "hinge", "robust"];
    public static readonly string[] TruncationModes = ["keep_end", "keep_start"];

    /// <summary>beta: the KL penalty's weight (DPO/KTO: the reward's temperature; ORPO: the odds-ratio term's weight).</summary>
    public double Beta { get; init; } = 0.1;
    /// <summary>loss_type (DPO): sigmoid, ipo, hinge or robust.</summary>
    public string LossType { get; init; } = "sigmoid";
    /// <summary>label_smoothing (DPO sigmoid/robust): the assumed probability that a pair's preference is flipped.</summary>
    public double LabelSmoothing { get; init; }
    /// <summary>rpo_alpha (DPO): weight of the NLL on the chosen completions added to the loss; null: off.</summary>
    public double? RpoAlpha { get; init; }
    /// <summary>reference_free (DPO): an implicit reference that is uniform (log-probs 0).</summary>
    public bool ReferenceFree { get; init; }
    /// <summary>
    /// ref_adapter (DPO/KTO): a PEFT adapter folder loaded frozen beside the trained adapter as the reference (TRL's
    /// ref_adapter_name, e.g. the SFT adapter); null: the reference is the base with the adapters off.
    /// </summary>
    public string? RefAdapter { get; init; }
    /// <summary>precompute_ref_log_probs (DPO/KTO): the reference log-probs of every example once, before training.</summary>
    public bool PrecomputeRefLogProbs { get; init; }
    /// <summary>disable_dropout: no dropout in the policy's forward (TRL's default true).</summary>
    public bool DisableDropout { get; init; } = true;
    /// <summary>max_prompt_length: a longer prompt keeps its last tokens; null: no limit.</summary>
    public int? MaxPromptLength { get; init; } = 512;
    /// <summary>max_completion_length: a longer completion keeps its first tokens; null: no limit.</summary>
    public int? MaxCompletionLength { get; init; }
    /// <summary>max_length: prompt + completion beyond it are truncated by truncation_mode; null: no limit.</summary>
    public int? MaxLength { get; init; } = 1024;
    /// <summary>truncation_mode: keep_end (drop the prompt's start) or keep_start (drop the completion's end).</summary>
    public string TruncationMode { get; init; } = "keep_end";
    /// <summary>desirable_weight (KTO): weight of the desirable examples' losses.</summary>
    public double DesirableWeight { get; init; } = 1.0;
    /// <summary>undesirable_weight (KTO): weight of the undesirable examples' losses.</summary>
    public double UndesirableWeight { get; init; } = 1.0;
    /// <summary>center_rewards_coefficient (reward): weight of mean((r_chosen + r_rejected)²); null: off.</summary>
    public double? CenterRewardsCoefficient { get; init; }

    public void Validate(string trainer)
    {
        if (!LossTypes.Contains(LossType)) throw new PeftSharpException($"{trainer}.loss_type: '{LossType}' is not one of {string.Join(", ", LossTypes)}.");
        if (!TruncationModes.Contains(TruncationMode)) throw new PeftSharpException($"{trainer}.truncation_mode: '{TruncationMode}' is not keep_end or keep_start.");
        if (Beta <= 0) throw new PeftSharpException($"{trainer}.beta must be positive, got {Beta}.");
        if (LabelSmoothing < 0 || LabelSmoothing >= 0.5) throw new PeftSharpException($"{trainer}.label_smoothing must be in [0, 0.5), got {LabelSmoothing}.");
        if (LabelSmoothing > 0 && LossType is not ("sigmoid" or "robust"))
            throw new PeftSharpException($"{trainer}.label_smoothing applies to loss_type sigmoid and robust, not {LossType}.");
        if (ReferenceFree && PrecomputeRefLogProbs) throw new PeftSharpException($"{trainer}: reference_free and precompute_ref_log_probs exclude each other.");
        if (RefAdapter != null && ReferenceFree) throw new PeftSharpException($"{trainer}: ref_adapter and reference_free exclude each other.");
        foreach (var (v, name) in new[] { (MaxPromptLength, "max_prompt_length"), (MaxCompletionLength, "max_completion_length"), (MaxLength, "max_length") })
            if (v is < 1) throw new PeftSharpException($"{trainer}.{name} must be at least 1, got {v}.");
    }
}
