using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Training;
using PeftSharp.Training.Metrics;

namespace PeftSharp.Cli.Commands;

/// <summary>What `peftsharp eval` was asked to do.</summary>
public sealed record EvalOptions(string Model, string Data)
{
    public string? Adapter { get; init; }
    public IReadOnlyList<string> Metrics { get; init; } = ["loss"];
    public int MaxNewTokens { get; init; } = 64;
    public int MaxLength { get; init; } = 1024;
    public int BatchSize { get; init; } = 8;
    /// <summary>A built-in chat format name; else the model folder's tokenizer_config.json template.</summary>
    public string? ChatTemplate { get; init; }
    /// <summary>The split a JSON file holding {"train": [...], "test": [...]} is read from (evaluation: "test").</summary>
    public string Split { get; init; } = "test";
}

/// <summary>
/// `peftsharp eval --model DIR [--adapter DIR] --data FILE [--metrics loss,bleu,rougeL] [--max-new-tokens N]`:
/// eval loss, perplexity and mean token accuracy, and generation metrics (greedy decoding; corpus BLEU as
/// sacreBLEU, mean ROUGE-L F as rouge-score), printed as one JSON object.
/// </summary>
public static class EvalCommand
{
    public static readonly string[] MetricNames = ["loss", "bleu", "rougeL"];

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (config.json, safetensors, tokenizer).", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "Adapter folder to apply (PEFT format)." };
        var data = new Option<string>("--data") { Description = "Evaluation data: .jsonl, .json, .csv or .txt.", Required = true };
        var metrics = new Option<string>("--metrics") { Description = "Comma-separated: loss, bleu, rougeL.", DefaultValueFactory = _ => "loss" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate per prompt for bleu/rougeL.", DefaultValueFactory = _ => 64 };
        var maxLength = new Option<int>("--max-length") { Description = "Truncate examples to this many tokens for the loss.", DefaultValueFactory = _ => 1024 };
        var batch = new Option<int>("--batch-size") { Description = "Examples per loss batch.", DefaultValueFactory = _ => 8 };
        var chat = new Option<string?>("--chat-template") { Description = "Built-in chat format (chatml, llama3, llama2, zephyr) when the model has none." };
        var split = new Option<string>("--split") { Description = "The split of a JSON file holding {\"train\": [...], \"test\": [...]}.", DefaultValueFactory = _ => "test" };
        var command = new Command("eval", "Evaluate a model (and adapter) on a data file: loss, perplexity, token accuracy, BLEU, ROUGE-L.");
        var dtypeOption = ModelLoading.DtypeOption();
        foreach (var o in new Option[] { model, adapter, data, metrics, maxNew, maxLength, batch, chat, split, dtypeOption }) command.Options.Add(o);
        command.SetAction(r =>
        {
            var options = new EvalOptions(r.GetValue(model)!, r.GetValue(data)!)
            {
                Adapter = r.GetValue(adapter),
                Metrics = r.GetValue(metrics)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                MaxNewTokens = r.GetValue(maxNew),
                MaxLength = r.GetValue(maxLength),
                BatchSize = r.GetValue(batch),
                ChatTemplate = r.GetValue(chat),
                Split = r.GetValue(split)!,
            };
            Run(options, ModelLoading.LoaderFor(r.GetValue(dtypeOption)!), ModelLoading.ApplyAdapter, Tokenizer.FromFolder, Console.Out);
        });
        return command;
    }

    /// <summary>Loads through the given delegates, evaluates, writes the metrics JSON to <paramref name="output"/> and returns it.</summary>
    public static JsonObject Run(EvalOptions options, Func<string, ICausalLM> loadModel, Func<ICausalLM, string, ICausalLM>? loadAdapter,
        Func<string, Tokenizer> loadTokenizer, TextWriter output)
    {
        foreach (var m in options.Metrics)
            if (!MetricNames.Contains(m))
                throw new PeftSharpException($"--metrics: unknown metric '{m}'; expected any of {string.Join(", ", MetricNames)}.");
        if (options.MaxNewTokens < 1) throw new PeftSharpException("--max-new-tokens must be at least 1.");
        if (options.BatchSize < 1) throw new PeftSharpException("--batch-size must be at least 1.");

        var skipped = new List<MalformedRecord>();
        var records = DataFiles.Read(options.Data, "text", PlainTextMode.Lines, skipMalformed: false, skipped, options.Split);
        var (format, examples) = SftData.Convert(records, new DataArguments(), skipped);
        if (examples.Count == 0) throw new PeftSharpException($"{options.Data}: no examples.");

        var tokenizer = loadTokenizer(options.Model);
        ChatTemplate? template = null;
        if (format is DatasetFormat.Conversational or DatasetFormat.ConversationalPromptCompletion)
            template = ChatTemplates.Resolve(options.ChatTemplate != null && ChatTemplate.BuiltinNames.Contains(options.ChatTemplate) ? options.ChatTemplate : null, options.Model, options.ChatTemplate);

        var model = loadModel(options.Model);
        if (options.Adapter != null)
            model = (loadAdapter ?? throw new PeftSharpException("--adapter: adapter loading is not available."))(model, options.Adapter);
        try
        {
            var result = new JsonObject { ["examples"] = examples.Count };
            if (options.Metrics.Contains("loss"))
            {
                var tokenization = new SftTokenization(tokenizer, template, new SftTokenizationOptions { MaxLength = options.MaxLength });
                var set = SftData.Build(examples, tokenization, packing: false, options.MaxLength);
                var loss = LossEvaluation.Evaluate(model, set, options.BatchSize);
                result["eval_loss"] = loss.Loss;
                result["eval_perplexity"] = loss.Perplexity;
                result["eval_mean_token_accuracy"] = loss.MeanTokenAccuracy;
                result["eval_tokens"] = loss.TargetTokens;
            }
            if (options.Metrics.Contains("bleu") || options.Metrics.Contains("rougeL"))
            {
                var generation = GenerationMetrics.Evaluate(model, tokenizer, template, examples, options.MaxNewTokens);
                if (options.Metrics.Contains("bleu"))
                {
                    result["bleu"] = generation.Bleu.Score;
                    result["bleu_detail"] = generation.Bleu.ToString();
                }
                if (options.Metrics.Contains("rougeL")) result["rougeL"] = generation.RougeL;
            }
            output.WriteLine(result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return result;
        }
        finally
        {
            model.Dispose();
        }
    }
}
