using System.CommandLine;
using PeftSharp.Autograd;
using PeftSharp.Config;
using PeftSharp.Recipes;

namespace PeftSharp.Cli.Commands;

/// <summary>`peftsharp train CONFIG.yaml [--set key=value ...]`: LoRA, QLoRA or full fine-tuning from one config file.</summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var configFile = new Argument<string>("config") { Description = "A YAML or JSON config (sections model, lora, quantization, data, training)" };
        var set = new Option<string[]>("--set") { Description = "Override a key: section.key=value (repeatable)", AllowMultipleArgumentsPerToken = true };
        var profile = new Option<bool>("--profile") { Description = "Time each optimizer step by part (4-bit products, LoRA, attention, head and loss, ...) and print the split (sft trainer)" };
        var command = new Command("train", "Fine-tune a model (LoRA, QLoRA or full) from a config file.") { configFile, set, profile };
        command.SetAction(r =>
        {
            string path = r.GetValue(configFile)!;
            var config = RunConfig.Load(path, r.GetValue(set) ?? []);
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                e.Cancel = true;
                cts.Cancel();
                Console.Error.WriteLine("stopping after this step and saving a checkpoint...");
            };
            Console.CancelKeyPress += onCancel;
            // Under mpirun every rank runs this command; rank 0 alone prints (errors still reach stderr on every rank).
            var output = PeftSharp.Training.Distributed.MpiLauncher.Rank() > 0 ? TextWriter.Null : Console.Out;
            try { Run(config, output, cts.Token, Path.GetDirectoryName(Path.GetFullPath(path)), r.GetValue(profile)); }
            finally { Console.CancelKeyPress -= onCancel; }
        });
        return command;
    }

    /// <param name="configFolder">Where a grpo reward's judge:FILE is read from when relative (default: the working directory).</param>
    /// <param name="profileSteps">Profile the optimizer steps by part and print the split after the summary.</param>
    public static FineTuningResult Run(RunConfig config, TextWriter output, CancellationToken cancellation = default, string? configFolder = null,
        bool profileSteps = false)
    {
        foreach (var notice in config.Notices) output.WriteLine($"notice: {notice}");
        output.WriteLine($"{config.Method} fine-tuning of {config.ModelNameOrPath} → {config.Training.OutputDir}");
        var view = new TrainingProgressView(output);
        var judges = new List<IDisposable>();
        var judgeRewards = new List<AI.Judging.JudgeReward>();
        try
        {
            // grpo.reward_funcs' judge:FILE entries: an LLM judge's score (PeftSharp.AI), which the library cannot build itself.
            Training.Rl.IRewardFunction Host(Training.Rl.RewardSpec spec)
            {
                var reward = AI.Judging.JudgeReward.FromFile(Path.GetFullPath(spec.Argument, configFolder ?? Environment.CurrentDirectory), spec.Name, judges, output);
                judgeRewards.Add(reward);
                return reward;
            }
            var result = view.Run($"{config.Method}", () => config.Trainer == "grpo"
                ? GrpoTuning.Run(config, [view], cancellation, hostRewards: Host)
                : FineTuning.Run(config, [view], cancellation, profileSteps: profileSteps));
            PrintSummary(result, output, skipNotices: config.Notices.Count);
            if (result.Train.Profile is { } stepProfile) PrintProfile(stepProfile, output);
            foreach (var j in judgeRewards)
                output.WriteLine($"{j.Name}: {j.Scored} completions scored, {j.Unparseable} unparseable or failed (NaN); {j.Judge.Counts}");
            return result;
        }
        finally
        {
            foreach (var d in judges) d.Dispose();
        }
    }

    /// <summary>The step profile: seconds per step of each part, its share, and its first-forward / recomputation / backward split.</summary>
    public static void PrintProfile(StepProfile profile, TextWriter output)
    {
        var invariant = System.Globalization.CultureInfo.InvariantCulture;
        output.WriteLine(string.Create(invariant, $"step profile: {profile.WallSeconds / profile.Spans:F3} s/step over {profile.Spans} step(s) (the first includes start-up); s/step, share, ") +
            string.Join(" / ", Enum.GetValues<StepPhase>().Select(StepProfile.Name)) + ":");
        foreach (var (part, seconds, share, phases) in profile.PerSpan())
            output.WriteLine(string.Create(invariant, $"  {part,-18} {seconds,9:F3} s {100 * share,6:F1}%   ") + string.Join(" / ", phases.Select(p => p.ToString("F3", invariant))));
    }

    public static void PrintSummary(FineTuningResult r, TextWriter output, int skipNotices = 0)
    {
        foreach (var notice in r.Notices.Skip(skipNotices)) output.WriteLine($"notice: {notice}");
        output.WriteLine(r.TrainableLine);
        output.WriteLine($"steps: {r.Train.GlobalStep}, train loss: {r.Train.TrainingLoss:F4}" +
            (r.Eval != null ? $", eval loss: {r.Eval.Loss:F4}, perplexity: {r.Eval.Perplexity:F3}" : "") +
            (r.Generation != null ? $", BLEU: {r.Generation.Bleu.Score:F2}, ROUGE-L: {r.Generation.RougeL:F4}" : "") +
            (r.EvalMetrics != null ? ", " + string.Join(", ", r.EvalMetrics.Select(kv => $"{kv.Key}: {kv.Value:F4}")) : ""));
        string what = r.Method == "full" ? "model" : "adapter";
        output.WriteLine($"{what}: {r.OutputDir} ({r.OutputBytes / 1024.0:F1} KiB; base model {r.ModelBytes / 1048576.0:F1} MiB, {100.0 * r.OutputBytes / Math.Max(1, r.ModelBytes):F2}%)");
        output.WriteLine($"report: {r.ReportPath}");
    }
}
