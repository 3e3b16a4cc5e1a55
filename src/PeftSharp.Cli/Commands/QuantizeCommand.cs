using System.CommandLine;
using PeftSharp.Quantization;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp quantize --model DIR --out DIR --quant-type nf4|fp4 [--double-quant] [--blocksize 64]
/// [--compute-dtype bfloat16]`: writes the model as a bitsandbytes 4-bit Hugging Face checkpoint.
/// </summary>
public static class QuantizeCommand
{
    public static Command Create()
    {
        var modelOption = new Option<string>("--model") { Description = "Model folder (config.json + safetensors).", Required = true };
        var outOption = new Option<string>("--out") { Description = "Output folder for the quantized checkpoint.", Required = true };
        var typeOption = new Option<string>("--quant-type") { Description = "4-bit data type: nf4 or fp4.", DefaultValueFactory = _ => "nf4" };
        typeOption.AcceptOnlyFromAmong("nf4", "fp4");
        var doubleOption = new Option<bool>("--double-quant") { Description = "Quantize the block absmax too (bnb_4bit_use_double_quant)." };
        var blockOption = new Option<int>("--blocksize") { Description = "Elements per absmax block (64 as transformers uses).", DefaultValueFactory = _ => 64 };
        var computeOption = new Option<string>("--compute-dtype") { Description = "bnb_4bit_compute_dtype: float32, bfloat16 or float16.", DefaultValueFactory = _ => "float32" };
        computeOption.AcceptOnlyFromAmong(BitsAndBytesConfig.AllowedComputeDtypes);
        var skipOption = new Option<string[]>("--skip-modules")
        {
            Description = "Modules left in full precision (llm_int8_skip_modules); default: the output layer.",
            AllowMultipleArgumentsPerToken = true,
        };

        var command = new Command("quantize", "Write a model as a bitsandbytes 4-bit (NF4/FP4) Hugging Face checkpoint.");
        foreach (var option in new Option[] { modelOption, outOption, typeOption, doubleOption, blockOption, computeOption, skipOption })
            command.Options.Add(option);
        command.SetAction(parseResult =>
        {
            var skip = parseResult.GetValue(skipOption);
            var config = new BitsAndBytesConfig
            {
                LoadIn4bit = true,
                Bnb4bitQuantType = parseResult.GetValue(typeOption)!,
                Bnb4bitUseDoubleQuant = parseResult.GetValue(doubleOption),
                Bnb4bitBlockSize = parseResult.GetValue(blockOption),
                Bnb4bitComputeDtype = parseResult.GetValue(computeOption)!,
                LlmInt8SkipModules = skip is { Length: > 0 } ? skip : null,
            };
            string output = parseResult.GetValue(outOption)!;
            var quantized = QuantizedCheckpoint.Write(parseResult.GetValue(modelOption)!, output, config, notice => Console.WriteLine($"notice: {notice}"));
            Console.WriteLine($"quantized {quantized.Count} linear weights to {config.Bnb4bitQuantType}{(config.Bnb4bitUseDoubleQuant ? " (double quant)" : "")}, block size {config.Bnb4bitBlockSize}; wrote {output}");
        });
        return command;
    }
}
