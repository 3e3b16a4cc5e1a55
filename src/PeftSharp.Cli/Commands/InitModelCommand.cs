using System.CommandLine;
using PeftSharp.Models.Init;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp init-model (--arch gpt2|llama|qwen2|mistral --preset NAME | --config CONFIG_JSON) [--seed N] [--dtype float32|bfloat16|float16]
/// [--quantize nf4|fp4 [--double-quant] [--random-codes]] --out DIR [--config-only]`: writes a Hugging Face model folder with random weights (sharded past
/// 5 GB) and a small byte-level BPE tokenizer; with --quantize, a pre-quantized bitsandbytes 4-bit checkpoint written one linear at a time.
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
        var configOption = new Option<string?>("--config") { Description = "A config.json (or its folder) whose shape to use instead of --preset: any supported model type and size." };
        var quantizeOption = new Option<string?>("--quantize") { Description = "Write a bitsandbytes 4-bit checkpoint: nf4 or fp4 (compute dtype: --dtype)." };
        var doubleQuantOption = new Option<bool>("--double-quant") { Description = "With --quantize: quantize the absmax constants too (bnb_4bit_use_double_quant)." };
        var randomCodesOption = new Option<bool>("--random-codes")
        {
            Description = "With --quantize: draw uniform 4-bit codes and normal-sized block scales directly instead of quantizing normal weights "
                + "(a 65B-shaped checkpoint in the time it takes to write; for memory and speed measurements).",
        };
        var command = new Command("init-model", "Write a Hugging Face model folder with random weights (config, safetensors, tokenizer, chat template).");
        command.Options.Add(archOption);
        command.Options.Add(presetOption);
        command.Options.Add(seedOption);
        command.Options.Add(dtypeOption);
        command.Options.Add(outOption);
        command.Options.Add(configOnlyOption);
        command.Options.Add(configOption);
        command.Options.Add(quantizeOption);
        command.Options.Add(doubleQuantOption);
        command.Options.Add(randomCodesOption);
        command.SetAction(parseResult =>
        {
            string? config = parseResult.GetValue(configOption), arch = parseResult.GetValue(archOption), quantize = parseResult.GetValue(quantizeOption);
            if (config != null && (arch != null || parseResult.GetResult(presetOption) is { Implicit: false }))
                throw new PeftSharpException("init-model: --config gives the shape; leave out --arch and --preset.");
            if (parseResult.GetValue(doubleQuantOption) && quantize == null) throw new PeftSharpException("init-model: --double-quant needs --quantize nf4|fp4.");
            bool randomCodes = parseResult.GetValue(randomCodesOption);
            if (randomCodes && quantize == null) throw new PeftSharpException("init-model: --random-codes needs --quantize nf4|fp4.");
            string dtype = parseResult.GetValue(dtypeOption)!;
            Run(new InitModelOptions
            {
                Architecture = arch,
                Preset = parseResult.GetValue(presetOption)!,
                Seed = parseResult.GetValue(seedOption),
                Dtype = dtype,
                ConfigOnly = parseResult.GetValue(configOnlyOption),
                ConfigPath = config,
                LinearEncoder = quantize == null ? null : new Quantization.FourBitWeightEncoder(QuantizationFor(quantize, parseResult.GetValue(doubleQuantOption), dtype),
                    randomCodes ? parseResult.GetValue(seedOption) : null),
            }, parseResult.GetValue(outOption)!, Console.Out);
        });
        return command;
    }

    /// <summary>The quantization_config of --quantize: 4-bit, the given type, double quant or not, computing in the checkpoint's dtype.</summary>
    public static Quantization.BitsAndBytesConfig QuantizationFor(string quantType, bool doubleQuant, string dtype) => new()
    {
        LoadIn4bit = true,
        Bnb4bitQuantType = quantType is "nf4" or "fp4" ? quantType : throw new PeftSharpException($"init-model: --quantize '{quantType}'; expected nf4 or fp4."),
        Bnb4bitUseDoubleQuant = doubleQuant,
        Bnb4bitComputeDtype = ModelInitializer.ParseDtype(dtype).TorchDtype,
    };

    /// <summary>Writes the folder and prints what was written.</summary>
    public static void Run(InitModelOptions options, string folder, TextWriter output)
    {
        var result = ModelInitializer.Write(folder, options);
        var c = result.Config;
        output.WriteLine($"{c.ModelType} {options.ConfigPath ?? options.Preset}: hidden {c.HiddenSize}, {c.LayerCount} layers, {c.HeadCount} heads, vocab {c.VocabSize}, "
            + $"{result.Skeleton.ParameterCount.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)} parameters{(options.ConfigOnly ? " (config only)" : $", seed {options.Seed}, {c.TorchDtype}")}");
        foreach (var file in result.Files) output.WriteLine($"wrote {file}");
        output.Flush();
    }
}
