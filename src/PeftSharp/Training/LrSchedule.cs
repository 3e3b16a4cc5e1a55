namespace PeftSharp.Training;

/// <summary>
/// transformers' <c>get_scheduler</c> learning-rate multipliers, as a pure function of the step
/// (LambdaLR: the k-th optimizer step, 0-based, uses baseLr · Factor(k)); nothing to save but the step.
/// </summary>
public sealed class LrSchedule
{
    public LrSchedule(string type, double baseLearningRate, int warmupSteps, int totalSteps, double numCycles = double.NaN,
        double power = 1.0, double lrEnd = 1e-7)
    {
        if (!TrainingArguments.Schedulers.Contains(type))
            throw new PeftSharpException($"training.lr_scheduler_type: unknown scheduler '{type}'; expected one of {string.Join(", ", TrainingArguments.Schedulers)}.");
        if (type == "polynomial" && !(baseLearningRate > lrEnd))
            throw new PeftSharpException($"training.lr_scheduler_kwargs.lr_end ({lrEnd}) must be smaller than the learning rate ({baseLearningRate}).");
        Type = type;
        BaseLearningRate = baseLearningRate;
        WarmupSteps = warmupSteps;
        TotalSteps = totalSteps;
        NumCycles = double.IsNaN(numCycles) ? (type == "cosine_with_restarts" ? 1.0 : 0.5) : numCycles;
        Power = power;
        LrEnd = lrEnd;
    }

    /// <summary>The schedule TrainingArguments describe for a run of <paramref name="totalSteps"/> steps (lr_scheduler_kwargs: num_cycles, power, lr_end).</summary>
    public static LrSchedule From(TrainingArguments args, int totalSteps)
    {
        var kw = args.LrSchedulerKwargs;
        double Kw(string key, double fallback) => kw[key] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<double>(out var d) ? d : fallback;
        return new LrSchedule(args.LrSchedulerType, args.LearningRate, args.WarmupStepsFor(totalSteps), totalSteps,
            Kw("num_cycles", double.NaN), Kw("power", 1.0), Kw("lr_end", 1e-7));
    }

    public string Type { get; }
    public double BaseLearningRate { get; }
    public int WarmupSteps { get; }
    public int TotalSteps { get; }
    public double NumCycles { get; }
    public double Power { get; }
    public double LrEnd { get; }

    /// <summary>The learning rate of 0-based step <paramref name="step"/>.</summary>
    public double LearningRate(int step) => BaseLearningRate * Factor(step);

    public double Factor(int step)
    {
        int w = WarmupSteps, total = TotalSteps;
        if (Type == "constant") return 1.0;
        if (step < w) return (double)step / Math.Max(1, w);
        switch (Type)
        {
            case "constant_with_warmup":
                return 1.0;
            case "linear":
                return Math.Max(0.0, (double)(total - step) / Math.Max(1, total - w));
            case "cosine":
            {
                double progress = (double)(step - w) / Math.Max(1, total - w);
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * NumCycles * 2.0 * progress)));
            }
            case "cosine_with_restarts":
            {
                double progress = (double)(step - w) / Math.Max(1, total - w);
                if (progress >= 1.0) return 0.0;
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * ((NumCycles * progress) % 1.0))));
            }
            default: // polynomial
            {
                double lrInit = BaseLearningRate;
                if (step > total) return LrEnd / lrInit;
                double range = lrInit - LrEnd;
                double remaining = 1.0 - (double)(step - w) / (total - w);
                return (range * Math.Pow(remaining, Power) + LrEnd) / lrInit;
            }
        }
    }
}
