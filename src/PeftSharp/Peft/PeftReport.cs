using PeftSharp.Models;

namespace PeftSharp.Peft;

/// <summary>
/// What get_peft_model would report for a model described by config.json alone: the matched
/// modules and print_trainable_parameters' numbers, without loading any weight.
/// </summary>
public sealed record PeftReport(TargetMatch Match, long TrainableParameters, long AllParameters)
{
    public string TrainableLine => PeftModel.FormatTrainable(TrainableParameters, AllParameters);

    public static PeftReport FromSkeleton(ModelSkeleton skeleton, LoraConfig config)
    {
        config.Validate();
        var match = TargetMatcher.Match(config, skeleton.Linears, skeleton.Config.ModelType);
        long adapter = 0;
        foreach (var m in match.Modules)
        {
            adapter += (long)config.RankFor(m.Name) * (m.InFeatures + m.OutFeatures);
            if (config.UseDora) adapter += m.OutFeatures;
        }
        long trainable = adapter, extra = adapter;
        var saveNames = config.ModulesToSave ?? (config.TaskType == "SEQ_CLS" ? ["classifier", "score"] : []);
        foreach (var l in skeleton.Linears.Where(l => saveNames.Any(n => l.Name.EndsWith(n, StringComparison.Ordinal))))
        {
            trainable += l.ParameterCount;
            extra += l.ParameterCount;
        }
        if (config.Bias == "all")
            trainable += skeleton.Parameters.Where(p => p.Name.Contains("bias", StringComparison.Ordinal)).Sum(p => p.Count);
        else if (config.Bias == "lora_only")
            trainable += match.Modules.Where(m => m.HasBias).Sum(m => (long)m.OutFeatures);
        return new PeftReport(match, trainable, skeleton.ParameterCount + extra);
    }
}
