namespace PeftSharp.Training.Rl;

/// <summary>The grpo section: TRL's GRPOConfig names, defaults as TRL's (loss_type dapo, beta 0, epsilon 0.2).</summary>
public sealed class GrpoOptions
{
    public static readonly string[] LossTypes = ["grpo", "dr_grpo", "dapo", "bnpo"];
    public static readonly string[] ScaleRewardsModes = ["group", "batch", "none"];

    public int NumGenerations { get; init; } = 8;
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int TopK { get; init; }
    public int? MaxPromptLength { get; init; } = 512;
    public int MaxCompletionLength { get; init; } = 256;
    public double Beta { get; init; }
    public double Epsilon { get; init; } = 0.2;
    public double? EpsilonHigh { get; init; }
    public string LossType { get; init; } = "dapo";
    /// <summary>group (true), batch or none (false).</summary>
    public string ScaleRewards { get; init; } = "group";
    /// <summary>Passes over each generation batch (TRL's num_iterations, μ in the GRPO paper).</summary>
    public int NumIterations { get; init; } = 1;
    /// <summary>Micro-batches one generation fills; null: gradient_accumulation_steps (TRL's default).</summary>
    public int? StepsPerGeneration { get; init; }
    public bool MaskTruncatedCompletions { get; init; }
    public IReadOnlyList<string> RewardFuncs { get; init; } = [];
    public IReadOnlyList<double>? RewardWeights { get; init; }
    public bool LogCompletions { get; init; } = true;

    public double EpsilonLow => Epsilon;
    public double EpsilonHighOrLow => EpsilonHigh ?? Epsilon;

    public void Validate()
    {
        if (NumGenerations < 2) throw new PeftSharpException($"grpo.num_generations must be at least 2 (a group needs a spread of rewards); got {NumGenerations}.");
        if (!LossTypes.Contains(LossType)) throw new PeftSharpException($"grpo.loss_type: '{LossType}' is not one of {string.Join(", ", LossTypes)}.");
        if (!ScaleRewardsModes.Contains(ScaleRewards)) throw new PeftSharpException($"grpo.scale_rewards: '{ScaleRewards}' is not one of true, false, {string.Join(", ", ScaleRewardsModes)}.");
        if (NumIterations < 1) throw new PeftSharpException($"grpo.num_iterations must be at least 1; got {NumIterations}.");
        if (StepsPerGeneration is int s && s < 1) throw new PeftSharpException($"grpo.steps_per_generation must be at least 1; got {s}.");
        if (MaxCompletionLength < 1) throw new PeftSharpException("grpo.max_completion_length must be at least 1.");
        if (RewardWeights != null && RewardWeights.Count != RewardFuncs.Count)
            throw new PeftSharpException($"grpo.reward_weights has {RewardWeights.Count} weight(s) for {RewardFuncs.Count} reward function(s).");
    }
}
