using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Optimizers;

/// <summary>Builds the optimizer TrainingArguments.optim names, with HF Trainer's parameter groups (no decay on biases and 1-D parameters).</summary>
public static class Optimizer
{
    public static IOptimizer Create(TrainingArguments args, IEnumerable<Parameter> parameters)
    {
        var trainable = parameters.Where(p => p.RequiresGrad).ToList();
        float lr = (float)args.LearningRate, wd = (float)args.WeightDecay;
        return args.Optim switch
        {
            "adamw_torch" or "adamw_torch_fused" or "adamw_hf" or "paged_adamw_32bit" =>
                new AdamW(trainable, lr, (float)args.AdamBeta1, (float)args.AdamBeta2, (float)args.AdamEpsilon, wd, GradientNorm.Decays),
            "adamw_8bit" or "adamw_bnb_8bit" or "paged_adamw_8bit" =>
                new AdamW8bit(trainable, lr, (float)args.AdamBeta1, (float)args.AdamBeta2, (float)args.AdamEpsilon, wd, GradientNorm.Decays),
            "sgd" => new Sgd(trainable, lr, wd, GradientNorm.Decays),
            "adafactor" => new Adafactor(trainable, lr, wd, GradientNorm.Decays),
            _ => throw new PeftSharpException($"training.optim: unknown optimizer '{args.Optim}'; expected one of {string.Join(", ", TrainingArguments.Optimizers)}."),
        };
    }
}
