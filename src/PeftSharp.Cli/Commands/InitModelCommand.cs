using System.CommandLine;
using PeftSharp.Models.Init;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp init-model --arch gpt2|llama|qwen2|mistral --preset NAME [--seed N] [--dtype float32|bfloat16|float16] --out DIR [--config-only]`:
/// writes a Hugging Face model folder with random weights and a small byte-level BPE tokenizer.
/// </summary>
public static class InitModelCommand
{
    public static Command Create()
    {
        var archOption = new Option<string?>("--arch")
        {
            Description = $"Architecture: {string.Join("|", ModelPresets.Architectures)} (real-shape presets imply theirs).",
        };
        var presetOption = new Option<string>("--preset")
        {
            Description = $"Shape: {string.Join("|", ModelPresets.Names)} (default tiny).",
            DefaultValueFactory = _ => "tiny",
        };
        var seedOption = new Option<ulong>("--seed") { Description = "Seed of the random weights (default 0)." };
        var dtypeOption = new Option<string>("--dtype")
        {
            Description = $"Weight dtype: {string.Join("|", ModelInitializer.Dtypes)} (default float32; values drawn in float32, rounded to nearest even).",
            DefaultValueFactory = _ => "float32",
        };
        var outOption = new Option<string>("--out") { Description = "Folder to write.", Required = true };
        var configOnlyOption = new Option<bool>("--config-only") { Description = "Write everything but the weights." };
        var command = new Command("init-model", "Write a Hugging Face model folder with random weights (config, safetensors, tokenizer, chat template).");
        command.Options.Add(archOption);
        command.Options.Add(presetOption);
        command.Options.Add(seedOption);
        command.Options.Add(dtypeOption);
        command.Options.Add(outOption);
        command.Options.Add(configOnlyOption);
        command.SetAction(parseResult => Run(new InitModelOptions
        {
            Architecture = parseResult.GetValue(archOption),
            Preset = parseResult.GetValue(presetOption)!,
            Seed = parseResult.GetValue(seedOption),
            Dtype = parseResult.GetValue(dtypeOption)!,
            ConfigOnly = parseResult.GetValue(configOnlyOption),
        }, parseResult.GetValue(outOption)!, Console.Out));
        return command;
    }

    /// <summary>Writes the folder and prints what was written.</summary>
    public static void Run(InitModelOptions options, string folder, TextWriter output)
    {
        var result = ModelInitializer.Write(folder, options);
        var c = result.Config;
        output.WriteLine($"{c.ModelType} {options.Preset}: hidden {c.HiddenSize}, {c.LayerCount} layers, {c.HeadCount} heads, vocab {c.VocabSize}, "
            + $"{result.Skeleton.ParameterCount.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)} parameters{(options.ConfigOnly ? " (config only)" : $", seed {options.Seed}, {c.TorchDtype}")}");
        foreach (var file in result.Files) output.WriteLine($"wrote {file}");
        output.Flush();
    }
}
