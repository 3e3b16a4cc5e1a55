using System.CommandLine;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Cli.Commands;

/// <summary>`peftsharp inspect --model DIR [--target-modules a,b] [-r N] [--list-modules]`: PEFT's numbers from config.json alone.</summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder or config.json, or a .gguf file (its metadata and tensors).", Required = true };
        var targets = new Option<string?>("--target-modules") { Description = "Comma-separated module names, or all-linear (default: PEFT's default for the model type)." };
        var rank = new Option<int>("-r", "--rank") { Description = "LoRA rank (default 8).", DefaultValueFactory = _ => 8 };
        var list = new Option<bool>("--list-modules") { Description = "List every linear module with its shape." };
        var command = new Command("inspect", "Show what LoRA would train on a model, from its config.json alone.");
        command.Options.Add(model);
        command.Options.Add(targets);
        command.Options.Add(rank);
        command.Options.Add(list);
        command.SetAction(r => Run(r.GetValue(model)!, r.GetValue(targets), r.GetValue(rank), r.GetValue(list), Console.Out));
        return command;
    }

    public static void Run(string modelPath, string? targetModules, int rank, bool listModules, TextWriter output)
    {
        if (File.Exists(modelPath) && Formats.Gguf.GgufFile.IsGguf(modelPath))
        {
            GgufInspect.Run(modelPath, listModules, output);
            return;
        }
        var skeleton = ModelSkeleton.FromConfig(ModelConfig.Load(modelPath));
        var config = new LoraConfig
        {
            R = rank,
            TargetModules = targetModules switch
            {
                null => null,
                TargetModules.AllLinearKeyword => TargetModules.AllLinear,
                _ => TargetModules.FromNames(targetModules.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)),
            },
        };
        var report = PeftReport.FromSkeleton(skeleton, config);
        output.WriteLine($"model: {skeleton.Config.ModelType}, {skeleton.Config.LayerCount} layers, hidden {skeleton.Config.HiddenSize}");
        output.WriteLine(report.TrainableLine);
        foreach (var line in report.Match.Describe()) output.WriteLine("  " + line);
        if (!listModules) return;
        output.WriteLine("linear modules:");
        foreach (var m in skeleton.Linears)
            output.WriteLine($"  {m.Name} [{m.OutFeatures}, {m.InFeatures}]{(m.HasBias ? " +bias" : "")}{(m.IsConv1D ? " Conv1D" : "")}");
    }
}
