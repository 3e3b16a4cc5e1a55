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

    /// <summary>
    /// The schedule TrainingArguments describe for a run of <paramref name="totalSteps"/> steps. lr_scheduler_kwargs as
    /// transformers passes them: num_cycles (cosine family), power and lr_end (polynomial), min_lr or min_lr_rate
    /// (cosine_with_min_lr, exactly one), num_decay_steps (required), num_stable_steps, warmup_type, decay_type and
    /// min_lr_ratio (warmup_stable_decay). Keys a scheduler does not take are refused by name.
    /// </summary>
    public static LrSchedule From(TrainingArguments args, int totalSteps)
    {
        var kw = args.LrSchedulerKwargs;
        string type = args.LrSchedulerType;
        string[] accepted = type switch
        {
            "cosine" or "cosine_with_restarts" => ["num_cycles"],
            "polynomial" => ["power", "lr_end"],
            "cosine_with_min_lr" => ["num_cycles", "min_lr", "min_lr_rate"],
            "warmup_stable_decay" => ["num_decay_steps", "num_stable_steps", "warmup_type", "decay_type", "min_lr_ratio", "num_cycles"],
            _ => [],
        };
        foreach (var (key, _) in kw)
            if (!accepted.Contains(key))
                throw new PeftSharpException($"training.lr_scheduler_kwargs.{key}: the {type} scheduler does not take it" +
                    (accepted.Length > 0 ? $"; it takes {string.Join(", ", accepted)}." : "; it takes no arguments."));
        double? Kw(string key) => kw[key] == null ? null
            : Config.KeySpec.AsNumber(kw[key]) ?? throw new PeftSharpException($"training.lr_scheduler_kwargs.{key} must be a number, got {kw[key]!.ToJsonString()}.");
        string KwText(string key, string fallback, string[] allowed)
        {
            if (kw[key] == null) return fallback;
            string v = kw[key] is System.Text.Json.Nodes.JsonValue j && j.TryGetValue<string>(out var t) ? t : kw[key]!.ToJsonString();
            return allowed.Contains(v) ? v : throw new PeftSharpException($"training.lr_scheduler_kwargs.{key} must be one of {string.Join(", ", allowed)}, got {v}.");
        }
        int warmup = args.WarmupStepsFor(totalSteps);
        var schedule = new LrSchedule(type, args.LearningRate, warmup, totalSteps, Kw("num_cycles") ?? double.NaN, Kw("power") ?? 1.0, Kw("lr_end") ?? 1e-7);
        if (type == "cosine_with_min_lr")
        {
            double? minLr = Kw("min_lr"), rate = Kw("min_lr_rate");
            if (minLr != null && rate != null) throw new PeftSharpException("training.lr_scheduler_kwargs: set only one of min_lr and min_lr_rate.");
            schedule.MinLrRate = rate ?? (minLr / args.LearningRate)
                ?? throw new PeftSharpException("training.lr_scheduler_type cosine_with_min_lr needs lr_scheduler_kwargs min_lr or min_lr_rate.");
        }
        if (type == "warmup_stable_decay")
        {
            int decay = (int)(Kw("num_decay_steps") ?? throw new PeftSharpException("training.lr_scheduler_type warmup_stable_decay needs lr_scheduler_kwargs num_decay_steps."));
            schedule.DecaySteps = decay;
            schedule.StableSteps = Kw("num_stable_steps") is double stable ? (int)stable : totalSteps - warmup - decay;
            schedule.WarmupType = KwText("warmup_type", "linear", ["linear", "cosine", "1-sqrt"]);
            schedule.DecayType = KwText("decay_type", "cosine", ["linear", "cosine", "1-sqrt"]);
            schedule.MinLrRate = Kw("min_lr_ratio") ?? 0;
        }
        return schedule;
    }

    /// <summary>cosine_with_min_lr's floor, and warmup_stable_decay's min_lr_ratio, as a share of the learning rate.</summary>
    public double MinLrRate { get; private set; }
    public int StableSteps { get; private set; }
    public int DecaySteps { get; private set; }
    public string WarmupType { get; private set; } = "linear";
    public string DecayType { get; private set; } = "cosine";

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
        if (Type == "warmup_stable_decay") return WarmupStableDecay(step);
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
            case "cosine_with_min_lr":
            {
                double progress = (double)(step - w) / Math.Max(1, total - w);
                double factor = 0.5 * (1.0 + Math.Cos(Math.PI * NumCycles * 2.0 * progress));
                return Math.Max(0.0, factor * (1 - MinLrRate) + MinLrRate);
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

    /// <summary>transformers' get_wsd_schedule: warmup (linear, cosine or 1-sqrt), a stable phase at 1, a decay to min_lr_ratio.</summary>
    private double WarmupStableDecay(int step)
    {
        int w = WarmupSteps;
        double r = MinLrRate;
        if (step < w)
        {
            double progress = (double)step / Math.Max(1, w);
            double factor = WarmupType switch
            {
                "cosine" => 0.5 * (1.0 - Math.Cos(Math.PI * progress)),
                "1-sqrt" => 1.0 - Math.Sqrt(1.0 - progress),
                _ => progress,
            };
            return Math.Max(0.0, factor * (1.0 - r) + r);
        }
        if (step < w + StableSteps) return 1.0;
        if (step < w + StableSteps + DecaySteps)
        {
            double progress = (double)(step - w - StableSteps) / Math.Max(1, DecaySteps);
            double factor = DecayType switch
            {
                "linear" => 1.0 - progress,
                "1-sqrt" => 1.0 - Math.Sqrt(progress),
                _ => 0.5 * (1.0 + Math.Cos(Math.PI * NumCycles * 2.0 * progress)),
            };
            return Math.Max(0.0, factor * (1.0 - r) + r);
        }
        return r;
    }
}
