using System.CommandLine;
using System.Reflection;
using PeftSharp.Recipes;

namespace PeftSharp.Cli.Commands;

/// <summary>`peftsharp demo`: the offline end-to-end demo (the README's main command).</summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Where the models, adapter and report go", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var command = new Command("demo", "Offline demo: build a small model, LoRA fine-tune it on video recommendations, report BLEU before and after.") { output };
        command.SetAction(r =>
        {
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try { Run(r.GetValue(output)!, Console.Out, cts.Token); }
            finally { Console.CancelKeyPress -= onCancel; }
        });
        return command;
    }

    public static DemoData BundledData() => new(Resource("pretrain.txt"), Resource("train.jsonl"));

    public static DemoResult Run(string outputDir, TextWriter output, CancellationToken cancellation = default)
    {
        output.WriteLine("PeftSharp demo: LoRA fine-tuning, offline, on this machine's CPU.");
        var result = Demo.Run(outputDir, BundledData(), output, _ => [new TrainingProgressView(output)], cancellation);
        output.WriteLine();
        output.WriteLine(result.Lora.TrainableLine);
        output.WriteLine($"BLEU on held-out prompts: {result.Before.Bleu.Score:F2} before LoRA → {result.After.Bleu.Score:F2} after (ROUGE-L {result.Before.RougeL:F3} → {result.After.RougeL:F3})");
        output.WriteLine($"adapter: {result.Lora.OutputBytes / 1024.0:F1} KiB vs base model {result.Lora.ModelBytes / 1048576.0:F1} MiB ({100.0 * result.Lora.OutputBytes / result.Lora.ModelBytes:F2}%)");
        output.WriteLine();
        output.WriteLine("sample generations (held-out prompts):");
        foreach (var s in result.Lora.Report.Samples.Zip(result.Before.Predictions).Take(5))
        {
            output.WriteLine($"  prompt: {s.First.Prompt.Replace("\n", " ")}");
            output.WriteLine($"    before: {s.Second.Trim()}");
            output.WriteLine($"    after:  {s.First.After.Trim()}");
        }
        output.WriteLine();
        output.WriteLine($"adapter (PEFT format): {result.AdapterDir}");
        output.WriteLine($"report: {result.ReportPath}");
        output.WriteLine($"time: {result.Elapsed.TotalSeconds:F0} s");
        return result;
    }

    private static string Resource(string name)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("PeftSharp.Cli.DemoData." + name)
            ?? throw new InvalidOperationException($"The demo data {name} is not embedded in the CLI.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
