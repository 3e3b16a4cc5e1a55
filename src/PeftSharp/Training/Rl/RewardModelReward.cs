using System.Text.Json.Nodes;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Training.Preference;

namespace PeftSharp.Training.Rl;

/// <summary>
/// A trained reward model as a GRPO reward (grpo.reward_funcs: reward_model:PATH; TRL's reward_funcs entry that is a
/// sequence-classification model): PATH is a reward model folder, or the SEQ_CLS adapter folder training.trainer: reward wrote
/// (its base from adapter_config.json). As TRL's _calculate_rewards, each completion's reward is the first logit of
/// prompt + completion tokenized without special tokens; a conversational prompt (a message list) is the prompt's messages and
/// the completion as the assistant's message, rendered with the reward model's chat template. Loaded on first use.
/// </summary>
public sealed class RewardModelReward(string name, string path) : IRewardFunction, IDisposable
{
    private RewardModel? _model;

    public string Name => name;
    public string Path => path;

    public double[] Score(IReadOnlyList<RewardInput> completions)
    {
        try { _model ??= RewardModel.Load(path); }
        catch (PeftSharpException e) { throw new PeftSharpException($"grpo.reward_funcs: reward_model:{path}: {e.Message}", e); }
        var scores = new double[completions.Count];
        for (int i = 0; i < scores.Length; i++) scores[i] = _model.Score(Text(completions[i]), addSpecialTokens: false)[0];
        return scores;
    }

    /// <summary>The text the reward model reads for a completion.</summary>
    public string Text(RewardInput r)
    {
        if (r.Row["prompt"] is not JsonArray) return r.Prompt + r.Completion;
        var template = (_model ??= RewardModel.Load(path)).ChatTemplate
            ?? throw new PeftSharpException($"grpo.reward_funcs: reward_model:{path}: conversational prompts need the reward model's chat template, and its tokenizer has none.");
        var messages = Data.SftExamples.MessagesOf(r.Row, "prompt", "grpo prompt");
        messages.Add(new ChatMessage("assistant", r.Completion));
        try { return template.Render(messages, false); }
        catch (ChatTemplateException e) { throw new PeftSharpException($"grpo.reward_funcs: reward_model:{path}: chat template failed: {e.Message}", e); }
    }

    public void Dispose() => _model?.Dispose();
}
