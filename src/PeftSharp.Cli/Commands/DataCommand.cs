using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Formats;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp data CONFIG [--show N] [--json]`: what the trainer will see, before any model weights load: per split the
/// examples, tokens, truncated examples, rows (packed or not) and the share of tokens in the loss; then N training rows
/// token by token, marking the trained ones (as Axolotl's `preprocess --debug`). With --json, one object per row:
/// input_ids, labels (-100 where masked), attention_mask and position_ids. The training split is tokenized into the run's
/// cache (output_dir/tokenized, as `train` does), so `train` with the same data settings then starts without tokenizing.
/// </summary>
public static class DataCommand
{
    public static Command Create()
    {
        var configFile = new Argument<string>("config") { Description = "A YAML or JSON run config (its model, data and training sections are read)" };
        var set = new Option<string[]>("--set") { Description = "Override a key: section.key=value (repeatable)", AllowMultipleArgumentsPerToken = true };
        var show = new Option<int>("--show") { Description = "How many training rows to show token by token", DefaultValueFactory = _ => 2 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object per row (input_ids, labels, attention_mask, position_ids) instead" };
        var command = new Command("data", "Show what the trainer will see: counts per split and examples token by token, before any weights load.")
        {
            configFile, set, show, json,
        };
        command.SetAction(r =>
        {
            int n = r.GetValue(show);
            if (n < 0) throw new PeftSharpException($"--show must be 0 or more, got {n}.");
            Run(RunConfig.Load(r.GetValue(configFile)!, r.GetValue(set) ?? []), Console.Out, n, r.GetValue(json));
        });
        return command;
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static SftDataBundle Run(RunConfig config, TextWriter output, int show, bool json)
    {
        string folder = ModelFolder.Resolve(config.ModelNameOrPath);
        var tokenizer = Tokenizer.FromFolder(config.Tokenizer ?? folder);
        var template = SftData.ChatTemplateFor(config.Data, folder);
        // Tokenized into the run's cache, as train does: memory holds a few chunks of a large dataset, and the train that follows starts from it.
        var bundle = TokenizationProgressView.Run(progress => SftData.Load(config.Data, tokenizer, template, config.Training.DataSeed ?? config.Training.Seed,
            Recipes.FineTuning.TokenizationCacheDirectory(config.Training), progress));
        var rows = bundle.Train.Rows.Take(show).ToList();
        if (json)
        {
            for (int i = 0; i < rows.Count; i++)
            {
                var row = rows[i];
                output.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["split"] = bundle.TrainStats?.Split ?? "train",
                    ["row"] = i,
                    ["input_ids"] = row.InputIds,
                    ["labels"] = row.Labels,
                    ["attention_mask"] = Enumerable.Repeat(1, row.Length).ToArray(),
                    ["position_ids"] = row.PositionIds,
                }, JsonOptions));
            }
            return bundle;
        }
        foreach (var notice in config.Notices.Concat(bundle.Notices)) output.WriteLine($"notice: {notice}");
        output.WriteLine($"format: {SftExamples.Describe(bundle.Format)}; max_length {config.Data.MaxLength}, packing {(config.Data.Packing ? "on" : "off")}, " +
            $"assistant_only_loss {(config.Data.AssistantOnlyLoss ? "on" : "off")}, completion_only_loss {config.Data.CompletionOnlyLoss?.ToString().ToLowerInvariant() ?? "auto"}");
        foreach (var stats in new[] { bundle.TrainStats, bundle.EvalStats })
            if (stats != null) output.WriteLine(Describe(stats, bundle.Train.Packed && stats == bundle.TrainStats));
        for (int i = 0; i < rows.Count; i++)
        {
            var row = rows[i];
            output.WriteLine();
            output.WriteLine($"train row {i}: {row.Length} tokens, {row.TargetCount} trained (marked +)");
            output.WriteLine($"{"pos",6} {"seg",3} {"id",7}   token");
            for (int t = 0; t < row.Length; t++)
            {
                string text = JsonSerializer.Serialize(tokenizer.Decode([row.InputIds[t]], skipSpecialTokens: false), JsonOptions);
                output.WriteLine($"{row.PositionIds[t],6} {row.SegmentIds[t],3} {row.InputIds[t],7} {(row.Labels[t] != PeftSharp.Kernels.CrossEntropy.IgnoreIndex ? '+' : ' ')} {text}");
            }
        }
        return bundle;
    }

    public static string Describe(SplitStats s, bool packed) =>
        $"{s.Split}: {s.Examples} examples, {s.Tokens} tokens, {s.Truncated} truncated to max_length, " +
        $"{s.Rows} rows{(packed ? " (packed)" : "")}, {s.LossTokens} tokens in the loss ({100 * s.LossShare:F1}%)";
}
