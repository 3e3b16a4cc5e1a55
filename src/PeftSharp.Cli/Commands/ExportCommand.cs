using System.CommandLine;
using PeftSharp.Export;
using PeftSharp.Formats.Gguf;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp export gguf --model DIR [--adapter DIR]... --out FILE.gguf [--type f32|f16|bf16|q8_0|q4_0] [--lora-only]`:
/// a model (adapters merged) or one adapter alone as a llama.cpp GGUF file.
/// </summary>
public static class ExportCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Base model folder (config.json + model.safetensors; a 4-bit checkpoint works too).", Required = true };
        var adapters = new Option<string[]>("--adapter") { Description = "PEFT adapter folder to merge (repeat for several: their deltas add up). With --lora-only: the adapter to write.", DefaultValueFactory = _ => [] };
        var output = new Option<string>("--out") { Description = "The .gguf file to write.", Required = true };
        var type = new Option<string>("--type") { Description = $"Matrix type: {string.Join(", ", GgufExporter.TypeNames)} (default f16; norms and biases stay f32).", DefaultValueFactory = _ => "f16" };
        var loraOnly = new Option<bool>("--lora-only") { Description = "Write the adapter alone in llama.cpp's LoRA format (for llama-cli --lora or Ollama's ADAPTER), not the model." };
        var gguf = new Command("gguf", "Write a GGUF file for llama.cpp, Ollama, LM Studio and LLamaSharp.");
        gguf.Options.Add(model);
        gguf.Options.Add(adapters);
        gguf.Options.Add(output);
        gguf.Options.Add(type);
        gguf.Options.Add(loraOnly);
        gguf.SetAction(r => Run(r.GetValue(model)!, r.GetValue(adapters) ?? [], r.GetValue(output)!, r.GetValue(type)!, r.GetValue(loraOnly), ModelLoading.Load, Console.Out));
        var command = new Command("export", "Export a model or adapter to another runtime's format.");
        command.Subcommands.Add(gguf);
        return command;
    }

    public static void Run(string modelDirectory, IReadOnlyList<string> adapterDirectories, string outputPath, string type, bool loraOnly,
        Func<string, ICausalLM> loader, TextWriter output)
    {
        var ggmlType = GgufExporter.ParseType(type);
        if (loraOnly && adapterDirectories.Count != 1)
            throw new PeftSharpException($"--lora-only writes one adapter: give exactly one --adapter (got {adapterDirectories.Count}).");
        if (!outputPath.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            output.WriteLine($"warning: {outputPath} does not end in .gguf; llama.cpp and Ollama do not mind, people might.");
        using var model = loader(modelDirectory);
        PeftModel? peft = null;
        try
        {
            var names = new List<string>();
            for (int i = 0; i < adapterDirectories.Count; i++)
            {
                string name = i == 0 ? PeftModel.DefaultAdapterName : $"adapter{i}";
                if (peft == null) peft = PeftModel.FromPretrained(model, adapterDirectories[i], name);
                else peft.LoadAdapter(adapterDirectories[i], name);
                names.Add(name);
            }
            if (peft != null)
            {
                peft.SetAdapter([.. names]);
                foreach (var notice in peft.Notices) output.WriteLine($"warning: {notice}");
            }
            var options = new GgufExportOptions { Type = ggmlType, TokenizerDirectory = modelDirectory };
            var result = loraOnly ? GgufExporter.ExportAdapter(peft!, outputPath, options) : GgufExporter.ExportModel(model, outputPath, options);
            foreach (var notice in result.Notices) output.WriteLine($"notice: {notice}");
            long bytes = new FileInfo(result.Path).Length;
            output.WriteLine($"{(loraOnly ? "LoRA adapter" : names.Count > 0 ? $"model with {names.Count} adapter(s) merged" : "model")} written to {result.Path} "
                + $"({GgmlTypes.Name(ggmlType)}, {result.TensorCount} tensors, {bytes / (1024.0 * 1024.0):F1} MiB)");
        }
        finally
        {
            peft?.Dispose();
        }
    }
}
