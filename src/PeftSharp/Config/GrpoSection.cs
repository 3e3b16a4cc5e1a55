using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Training.Rl;

namespace PeftSharp.Config;

/// <summary>The grpo section of the run config: TRL's GRPOConfig option names (training.trainer: grpo).</summary>
internal static class GrpoSection
{
    public static SectionSpec Spec { get; } = new("grpo", "TRL's GRPOConfig (training.trainer: grpo)", [
        new("num_generations", ValueKind.Int, "completions sampled per prompt, one group (default 8)", Min: 2, Nullable: false),
        new("temperature", ValueKind.Number, "sampling temperature (default 1.0)", Min: 0),
        new("top_p", ValueKind.Number, "nucleus sampling (default 1.0: off)", Min: 0, MinExclusive: true, Max: 1),
        new("top_k", ValueKind.Int, "keep the k most likely tokens (default null/0: off)", Min: 0),
        new("max_prompt_length", ValueKind.Int, "a longer prompt keeps its last tokens (default 512; null: no limit)", Min: 1),
        new("max_completion_length", ValueKind.Int, "most tokens sampled per completion (default 256)", Min: 1, Nullable: false),
        new("beta", ValueKind.Number, "weight of the k3 KL to the reference (default 0: no reference forward)", Min: 0),
        new("epsilon", ValueKind.Number, "the ratio's lower clip 1 − epsilon (and upper without epsilon_high; default 0.2)", Min: 0),
        new("epsilon_high", ValueKind.Number, "the ratio's upper clip 1 + epsilon_high (DAPO's clip-higher; default epsilon)", Min: 0),
        new("loss_type", ValueKind.Enum, "dapo (default), grpo, dr_grpo or bnpo", Allowed: GrpoOptions.LossTypes),
        new("scale_rewards", ValueKind.BoolOrString, "group/true (default), batch, or none/false: what the advantages are divided by"),
        new("num_iterations", ValueKind.Int, "passes over each generation batch (default 1); with more, later passes clip the ratio π/π_old", Min: 1),
        new("steps_per_generation", ValueKind.Int, "micro-batches one generation fills (default gradient_accumulation_steps)", Min: 1),
        new("mask_truncated_completions", ValueKind.Bool, "completions that hit max_completion_length add nothing to the loss"),
        new("reward_funcs", ValueKind.StringList, "built-in rewards: exact_match:COLUMN, contains:COLUMN, numeric:COLUMN, regex:PATTERN, json, json:SCHEMA_FILE, length:N, reward_model:PATH (a trained reward model or its adapter); judge:FILE (an LLM judge's score, built by peftsharp train)"),
        new("reward_weights", ValueKind.NumberList, "one weight per reward function (default all 1)"),
        new("log_completions", ValueKind.Bool, "append the sampled prompts, completions and rewards to completions.jsonl in output_dir (default true)"),
    ]);

    public static GrpoOptions? Read(string trainer, Dictionary<string, JsonObject> sections)
    {
        var o = sections["grpo"];
        if (trainer != "grpo")
        {
            if (o.Count > 0) throw new PeftSharpException($"the grpo section is for training.trainer: grpo, but this run's trainer is {trainer}.");
            return null;
        }
        var d = new GrpoOptions();
        string scale = o["scale_rewards"] switch
        {
            null => d.ScaleRewards,
            JsonValue v when v.GetValueKind() == JsonValueKind.True => "group",
            JsonValue v when v.GetValueKind() == JsonValueKind.False => "none",
            var v => v.GetValue<string>(),
        };
        var options = new GrpoOptions
        {
            NumGenerations = o.Int("num_generations", d.NumGenerations),
            Temperature = o.Num("temperature", d.Temperature),
            TopP = o.Num("top_p", d.TopP),
            TopK = o.Int("top_k", d.TopK),
            MaxPromptLength = o.ContainsKey("max_prompt_length") ? o.IntOrNull("max_prompt_length") : d.MaxPromptLength,
            MaxCompletionLength = o.Int("max_completion_length", d.MaxCompletionLength),
            Beta = o.Num("beta", d.Beta),
            Epsilon = o.Num("epsilon", d.Epsilon),
            EpsilonHigh = o.NumOrNull("epsilon_high"),
            LossType = o.Str("loss_type", d.LossType)!,
            ScaleRewards = scale,
            NumIterations = o.Int("num_iterations", d.NumIterations),
            StepsPerGeneration = o.IntOrNull("steps_per_generation"),
            MaskTruncatedCompletions = o.Bool("mask_truncated_completions", d.MaskTruncatedCompletions),
            RewardFuncs = o["reward_funcs"] is JsonArray funcs ? funcs.Select(f => f!.GetValue<string>()).ToList() : [],
            RewardWeights = o["reward_weights"] is JsonArray w ? w.Select(x => KeySpec.AsNumber(x)!.Value).ToList() : null,
            LogCompletions = o.Bool("log_completions", d.LogCompletions),
        };
        options.Validate();
        if (options.RewardFuncs.Count == 0)
            throw new PeftSharpException("grpo.reward_funcs: GRPO needs at least one reward function, e.g. [\"numeric:answer\"].");
        Rewards.Parse(options.RewardFuncs, host: spec => Rewards.FromFunc(spec.Name, _ => double.NaN)); // host kinds are built at run time
        return options;
    }
}
