using System.CommandLine;
using System.Globalization;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Peft;
using PeftSharp.Planning;

namespace PeftSharp.Cli.Commands;

/// <summary>`peftsharp plan`: what fits, from config.json alone.</summary>
public static class PlanCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "A model folder, a config.json, or ORG/NAME in the hub cache", Required = true };
        var memory = new Option<string>("--memory") { Description = "Memory available, e.g. 16GB", DefaultValueFactory = _ => "16GB" };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence", DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch") { Description = "Sequences per micro-batch", DefaultValueFactory = _ => 1 };
        var datasetSize = new Option<int?>("--dataset-size") { Description = "Number of training examples (small data gets smaller adapters)" };
        var rank = new Option<int>("-r", "--rank") { Description = "LoRA rank", DefaultValueFactory = _ => 8 };
        var targets = new Option<string?>("--target-modules") { Description = "Comma-separated module names, or all-linear" };
        var trainer = new Option<string>("--trainer") { Description = "sft (default) or grpo (then --batch is prompts per micro-batch and --seq-len the prompt length)", DefaultValueFactory = _ => "sft" };
        trainer.AcceptOnlyFromAmong("sft", "grpo");
        var generations = new Option<int>("--num-generations") { Description = "grpo: completions per prompt", DefaultValueFactory = _ => 8 };
        var completion = new Option<int>("--max-completion-length") { Description = "grpo: tokens per completion", DefaultValueFactory = _ => 256 };
        var stepsPerGeneration = new Option<int>("--steps-per-generation") { Description = "grpo: micro-batches one generation fills (its gradient_accumulation_steps by default)", DefaultValueFactory = _ => 1 };
        var command = new Command("plan", "Estimate memory for full fine-tuning, LoRA and QLoRA, and recommend a recipe.")
        {
            model, memory, seqLen, batch, datasetSize, rank, targets, trainer, generations, completion, stepsPerGeneration,
        };
        command.SetAction(result =>
        {
            var request = new PlanRequest
            {
                MemoryBudget = ParseBytes(result.GetValue(memory)!),
                SeqLength = Positive(result.GetValue(seqLen), "--seq-len"),
                BatchSize = Positive(result.GetValue(batch), "--batch"),
                DatasetSize = result.GetValue(datasetSize),
                LoraRank = Positive(result.GetValue(rank), "-r"),
                TargetModules = ParseTargets(result.GetValue(targets)),
                Grpo = result.GetValue(trainer) == "grpo"
                    ? new GrpoPlanRequest(Positive(result.GetValue(generations), "--num-generations"), Positive(result.GetValue(completion), "--max-completion-length"),
                        Positive(result.GetValue(stepsPerGeneration), "--steps-per-generation"))
                    : null,
            };
            Run(result.GetValue(model)!, request, Console.Out);
        });
        return command;
    }

    public static void Run(string modelReference, PlanRequest request, TextWriter output)
    {
        var configPath = File.Exists(modelReference) ? modelReference : Path.Combine(ModelFolder.Resolve(modelReference), ModelConfig.FileName);
        var config = ModelConfig.Load(configPath);
        var stored = config.TorchDtype is "float32" or null ? 4 : 2;
        // A pre-quantized 4-bit checkpoint (quantization_config): QLoRA trains on its codes as stored, views of the mapped file.
        bool preQuantized = config.Raw.ContainsKey("quantization_config");
        var plan = MemoryPlanner.Make(config, request with { StoredBytesPerParameter = stored, PreQuantized = preQuantized });
        output.WriteLine($"model: {config.ModelType}, {plan.Skeleton.ParameterCount:N0} parameters, weights stored as {config.TorchDtype ?? "float32"}");
        if (request.Grpo is { } g)
            output.WriteLine($"grpo: {request.BatchSize} prompt(s) x {g.NumGenerations} generations of {request.SeqLength} + {g.CompletionLength} tokens per micro-batch, " +
                $"a rollout of {g.StepsPerGeneration * request.BatchSize * g.NumGenerations} sequences per generation, memory budget {MemoryPlanner.Gib(request.MemoryBudget)}");
        else output.WriteLine($"batch {request.BatchSize} x seq {request.SeqLength}, memory budget {MemoryPlanner.Gib(request.MemoryBudget)}");
        output.WriteLine();
        string rolloutHeader = request.Grpo != null ? $" {"rollout",11}" : "";
        output.WriteLine($"{"method",-7} {"trainable",15} {"weights",11} {"grads",11} {"AdamW",11} {"activations",12} {"(ckpt)",11}{rolloutHeader} {"total",11} {"(ckpt)",11}");
        foreach (var e in plan.Estimates)
            output.WriteLine($"{e.Method,-7} {e.TrainableParameters,15:N0} {G(e.Weights),11} {G(e.Gradients),11} {G(e.OptimizerState),11} {G(e.Activations),12} {G(e.ActivationsWithCheckpointing),11}" +
                (request.Grpo != null ? $" {G(e.Rollout),11}" : "") + $" {G(e.Total),11} {G(e.TotalWithCheckpointing),11}");
        output.WriteLine();
        output.WriteLine($"(totals include {G(MemoryPlanner.RuntimeBytes)} for the runtime; \"file\" below is weights read from the memory-mapped checkpoint, pages the kernel can evict and read again)");
        foreach (var e in plan.Estimates.Where(e => e.Method == "qlora" && e.FileBacked > 0))
            output.WriteLine($"{e.Method,-7} with checkpointing: {G(e.Anonymous(checkpointing: true))} anonymous + {G(e.FileBacked)} file" +
                $"{(e.Method == "qlora" && preQuantized ? " (the 4-bit codes as stored)" : "")}; expected peak RSS within the budget {G(e.PeakResident(request.MemoryBudget, checkpointing: true))}");
        output.WriteLine();
        output.WriteLine(plan.PeftLine);
        var r = plan.Recipe;
        output.WriteLine($"recommended: {r.Method}, r={r.R}, lora_alpha={r.LoraAlpha}, target_modules={r.TargetModules}, lora_dropout={r.LoraDropout.ToString(CultureInfo.InvariantCulture)}, learning_rate {r.LearningRateRange}"
            + (r.Quantization != null ? $", quantization: {r.Quantization}" : "") + (r.GradientCheckpointing ? ", gradient_checkpointing: true" : ""));
        output.WriteLine($"why: {r.Why}.");
    }

    private static string G(long bytes) => MemoryPlanner.Gib(bytes);

    private static int Positive(int value, string option) =>
        value > 0 ? value : throw new PeftSharpException($"{option} must be a positive integer, got {value}.");

    private static TargetModules? ParseTargets(string? text) => text switch
    {
        null or "" => null,
        TargetModules.AllLinearKeyword => TargetModules.AllLinear,
        _ => TargetModules.FromNames(text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)),
    };

    /// <summary>"16GB", "16 GiB", "512MB", "1.5T" → bytes (binary units; B, K, M, G, T).</summary>
    public static long ParseBytes(string text)
    {
        var t = text.Trim().ToUpperInvariant().Replace(" ", "").Replace("IB", "").TrimEnd('B');
        int power = t.Length > 0 ? "KMGT".IndexOf(t[^1]) + 1 : 0;
        if (power > 0) t = t[..^1];
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value <= 0)
            throw new PeftSharpException($"--memory \"{text}\" is not a size; write e.g. 16GB or 512MB.");
        return (long)(value * Math.Pow(1024, power));
    }
}
