using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Formats;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Reporting;
using PeftSharp.Training;
using PeftSharp.Training.Metrics;

namespace PeftSharp.Recipes;

/// <summary>The demo's inputs: the pretraining text and the recommendation pairs (prompt-completion JSONL).</summary>
public sealed record DemoData(string PretrainText, string RecommendationsJsonl);

/// <summary>How big the demo is: the CLI runs the defaults; tests run a smaller model for fewer epochs.</summary>
public sealed record DemoSettings
{
    public string Preset { get; init; } = "small";
    public int PretrainEpochs { get; init; } = 30;
    public int LoraEpochs { get; init; } = 12;
}

public sealed record DemoResult(FineTuningResult Pretrain, FineTuningResult Lora, GenerationResult Before, GenerationResult After,
    string BaseModelDir, string AdapterDir, string ReportPath, TimeSpan Elapsed);

/// <summary>
/// `peftsharp demo`: everything offline in a few minutes on 2 cores. Builds a small GPT-2-shaped base
/// model, pretrains it briefly on the bundled text (full fine-tuning), scores it on held-out
/// recommendation prompts (BLEU), LoRA fine-tunes it on the recommendation pairs (c_attn, r 8,
/// lora_alpha 16, dropout 0.1 — seed 000's recipe), scores it again and writes report.html with
/// the generations before and after.
/// </summary>
public static class Demo
{
    public static DemoResult Run(string outputDir, DemoData data, TextWriter log, Func<string, IEnumerable<ITrainerCallback>>? callbacks = null,
        CancellationToken cancellation = default, DemoSettings? settings = null)
    {
        settings ??= new DemoSettings();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        outputDir = Path.GetFullPath(outputDir);
        string dataDir = Path.Combine(outputDir, "data"), initDir = Path.Combine(outputDir, "base-init"),
            baseDir = Path.Combine(outputDir, "base"), loraDir = Path.Combine(outputDir, "lora");
        Directory.CreateDirectory(dataDir);
        string pretrainFile = Path.Combine(dataDir, "pretrain.txt"), recsFile = Path.Combine(dataDir, "recommendations.jsonl");
        AtomicFile.WriteAllText(pretrainFile, data.PretrainText);
        AtomicFile.WriteAllText(recsFile, data.RecommendationsJsonl);

        log.WriteLine($"1/4 building a {settings.Preset} GPT-2-shaped base model (random weights, seed 0)");
        var init = ModelInitializer.Write(initDir, new InitModelOptions
        {
            Architecture = "gpt2", Preset = settings.Preset, Seed = 0,
            TokenizerCorpus = [data.PretrainText, data.RecommendationsJsonl], TokenizerMerges = 600,
        });
        log.WriteLine($"    {init.Skeleton.ParameterCount:N0} parameters in {initDir}");

        log.WriteLine("2/4 pretraining it briefly on the bundled text (full fine-tuning)");
        var pretrain = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml($"""
            model:
              name_or_path: "{Yaml(initDir)}"
            data:
              train_file: "{Yaml(pretrainFile)}"
              max_length: 64
            training:
              output_dir: "{Yaml(baseDir)}"
              learning_rate: 2.0e-3
              num_train_epochs: {settings.PretrainEpochs}
              per_device_train_batch_size: 16
              lr_scheduler_type: cosine
              warmup_steps: 0.05
              logging_steps: 10
              save_strategy: "no"
              seed: 0
            """)), callbacks?.Invoke("pretraining"), cancellation, generationSamples: 0);
        log.WriteLine($"    train loss {pretrain.Train.TrainingLoss:F3} after {pretrain.Train.GlobalStep} steps");

        var loraConfig = RunConfig.FromTree(ConfigTree.ParseYaml($"""
            model:
              name_or_path: "{Yaml(baseDir)}"
            lora:
              r: 8
              lora_alpha: 16
              target_modules: [c_attn]
              lora_dropout: 0.1
              bias: none
              task_type: CAUSAL_LM
            data:
              train_file: "{Yaml(recsFile)}"
              test_size: 0.1
              max_length: 64
            training:
              output_dir: "{Yaml(loraDir)}"
              learning_rate: 3.0e-3
              num_train_epochs: {settings.LoraEpochs}
              per_device_train_batch_size: 8
              lr_scheduler_type: linear
              warmup_steps: 0.05
              logging_steps: 5
              eval_strategy: epoch
              save_strategy: epoch
              save_total_limit: 1
              seed: 0
            """));

        log.WriteLine("3/4 scoring the base model on the held-out prompts");
        var tokenizer = Tokenizer.FromFolder(baseDir);
        var heldOut = SftData.Load(loraConfig.Data, tokenizer, null, loraConfig.Training.Seed).EvalExamples;
        GenerationResult before;
        using (var baseModel = CausalLM.Load(baseDir))
            before = GenerationMetrics.Evaluate(baseModel, tokenizer, null, heldOut, maxNewTokens: 24);
        log.WriteLine($"    BLEU before LoRA: {before.Bleu.Score:F2}");

        log.WriteLine("4/4 LoRA fine-tuning on the recommendation pairs (c_attn, r 8, lora_alpha 16, dropout 0.1)");
        var lora = FineTuning.Run(loraConfig, callbacks?.Invoke("LoRA"), cancellation, generationSamples: heldOut.Count, maxNewTokens: 24);
        var after = lora.Generation ?? throw new InvalidOperationException("the LoRA run produced no generations");

        var samples = heldOut.Select((e, i) => new SampleGeneration(FineTuning.PromptText(e), before.Predictions[i], after.Predictions[i], after.References[i])).ToList();
        var final = lora.Report.FinalMetrics.Where(m => m.Name is not ("BLEU" or "ROUGE-L F1")).ToList();
        final.InsertRange(0, [("BLEU before LoRA", $"{before.Bleu.Score:F2}"), ("BLEU after LoRA", $"{after.Bleu.Score:F2}"),
            ("ROUGE-L before / after", $"{before.RougeL:F4} / {after.RougeL:F4}")]);
        var report = HtmlReport.Write(loraDir, lora.Report with
        {
            Title = "PeftSharp demo: LoRA fine-tuning of a small GPT-2 on video recommendations",
            FinalMetrics = final,
            Samples = samples,
        });
        return new DemoResult(pretrain, lora, before, after, baseDir, loraDir, report, clock.Elapsed);
    }

    private static string Yaml(string path) => path.Replace("\\", "\\\\").Replace("\"", "\\\"");
}
