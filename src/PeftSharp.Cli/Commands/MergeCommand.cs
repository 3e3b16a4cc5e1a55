using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Cli.Commands;

/// <summary>`peftsharp merge --model DIR --adapter DIR --out DIR [--dtype bf16|f16|f32]`: merge_and_unload to a plain model folder.</summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Base model folder (config.json + model.safetensors).", Required = true };
        var adapter = new Option<string>("--adapter") { Description = "PEFT adapter folder (adapter_config.json + adapter_model.safetensors).", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write the merged model into.", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Weight dtype of the merged model: f32, bf16 or f16 (default f32).", DefaultValueFactory = _ => "f32" };
        var command = new Command("merge", "Merge a LoRA adapter into its base model and write a plain Hugging Face model folder.");
        command.Options.Add(model);
        command.Options.Add(adapter);
        command.Options.Add(output);
        command.Options.Add(dtype);
        command.SetAction(r => Run(r.GetValue(model)!, r.GetValue(adapter)!, r.GetValue(output)!, r.GetValue(dtype)!, ModelLoading.Load, Console.Out));
        return command;
    }

    public static DType ParseDType(string text) => text.ToLowerInvariant() switch
    {
        "f32" or "float32" => DType.F32,
        "bf16" or "bfloat16" => DType.BF16,
        "f16" or "float16" => DType.F16,
        _ => throw new PeftSharpException($"--dtype must be f32, bf16 or f16, got \"{text}\"."),
    };

    public static void Run(string modelDirectory, string adapterDirectory, string outputDirectory, string dtype, Func<string, ICausalLM> loader, TextWriter output)
    {
        var type = ParseDType(dtype);
        using var model = loader(modelDirectory);
        using var peft = PeftModel.FromPretrained(model, adapterDirectory);
        foreach (var notice in peft.Notices) output.WriteLine($"warning: {notice}");
        output.WriteLine($"adapter: {peft.LoraLayers.Count()} LoRA modules, {peft.SavedModules.Count()} saved modules");
        foreach (var notice in peft.SaveMerged(outputDirectory, type, modelDirectory)) output.WriteLine($"notice: {notice}");
        output.WriteLine($"merged model written to {outputDirectory} ({dtype})");
    }
}
