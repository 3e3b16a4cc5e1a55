using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Reporting;
using PeftSharp.Tensors;
using PeftSharp.Training;
using PeftSharp.Training.Preference;

namespace PeftSharp.Recipes;

/// <summary>
/// A preference run (training.trainer dpo, kto, orpo or reward) from a <see cref="RunConfig"/>: the data in TRL's preference
/// formats, the model loaded as for SFT (frozen base, 4-bit for QLoRA, trainable for full), the trainer's objective on the
/// shared <see cref="Trainer{TBatch}"/> loop, the adapter or model saved, the final evaluation, and report.html.
/// </summary>
public static class PreferenceTuning
{
    /// <summary>The name a ref_adapter is loaded under, beside the trained "default" adapter.</summary>
    public const string ReferenceAdapterName = "reference";

    public static FineTuningResult Run(RunConfig config, IEnumerable<ITrainerCallback>? callbacks = null, CancellationToken cancellation = default)
    {
        var args = config.Training;
        var options = config.Preference ?? new PreferenceOptions();
        var notices = new List<string>(config.Notices);
        string folder = ModelFolder.Resolve(config.ModelNameOrPath);
        var modelConfig = ModelConfig.Load(folder);
        var tokenizer = Tokenizer.FromFolder(config.Tokenizer ?? folder);
        var template = SftData.ChatTemplateFor(config.Data, folder);

        // The same sources as SFT: train_file / eval_file, or a dataset folder (or hub id) with its config and splits.
        var skipped = new List<MalformedRecord>();
        var expected = config.Trainer == "kto" ? PreferenceFormat.Unpaired : PreferenceFormat.Paired;
        var sources = SftData.Resolve(config.Data);
        var train = PreferenceData.Load(SftData.ReadRecords(sources.TrainFiles, sources.TrainSplit, config.Data, skipped), sources.Description,
            template, config.Data.SkipMalformed, skipped, expected);
        List<PreferenceExample>? eval = null;
        if (sources.EvalFiles != null)
            eval = PreferenceData.Load(SftData.ReadRecords(sources.EvalFiles, sources.EvalSplit, config.Data, skipped), $"{sources.Description} ({sources.EvalSplit})",
                template, config.Data.SkipMalformed, skipped, expected);
        else if (config.Data.TestSize is double testSize) (train, eval) = SftData.TrainTestSplit(train, testSize, args.DataSeed ?? args.Seed);
        if (!string.IsNullOrEmpty(config.Data.DatasetName))
            notices.Add($"dataset {sources.Description}: {train.Count} training examples (split \"{sources.TrainSplit}\")" +
                (eval != null && sources.EvalFiles != null ? $", {eval.Count} evaluation examples (split \"{sources.EvalSplit}\")" : "") + ".");
        if (skipped.Count > 0) notices.Add($"skipped {skipped.Count} malformed line(s); first: {skipped[0]}");
        var prefTokenizer = new PreferenceTokenizer(tokenizer, options);

        var loadOptions = FineTuning.LoadOptionsFor(config, folder);
        // The reward trainer trains a sequence classifier with one label (a causal-LM checkpoint gets a new score head).
        using ICausalLM model = config.Trainer == "reward"
            ? SequenceClassifier.Load(folder, numLabels: 1, loadOptions, (f, o) => QuantizedModel.Load(f, o))
            : QuantizedModel.Load(folder, loadOptions);
        if (config.LoadIn4Bit) QuantizedModel.QuantizeLinears(model, BitsAndBytesConfig.FromJson(config.Quantization!));
        PeftModel? peft = null;
        if (config.Lora != null)
        {
            config.Lora.BaseModelNameOrPath ??= config.ModelNameOrPath;
            peft = PeftModel.Wrap(model, config.Lora, rng: new Rng((ulong)args.Seed));
            notices.AddRange(peft.Notices);
        }
        if (args.ApplyPrecision(model, config.Dtype) is { } precision) notices.Add(precision);
        IReferenceModel? reference = peft != null ? new DisabledAdapterReference(peft) : null;
        if (options.RefAdapter is { } refAdapter)
        {
            if (peft == null) throw new PeftSharpException($"{config.Trainer}.ref_adapter: a reference adapter needs a lora section (the trained adapter sits beside it).");
            peft.LoadAdapter(refAdapter, ReferenceAdapterName, isTrainable: false);
            peft.SetAdapter(PeftModel.DefaultAdapterName);
            reference = new AdapterReference(peft, ReferenceAdapterName);
            notices.Add($"{config.Trainer}: the reference is the adapter in {refAdapter} (frozen), not the base.");
        }
        var (trainable, all) = peft?.CountParameters() ?? (model.Parameters.Where(p => p.RequiresGrad).Sum(p => p.Length), model.Parameters.Sum(p => p.Length));
        string trainableLine = peft?.PrintTrainableParameters() ?? Planning.MemoryPlanner.PeftLine(trainable, all);
        var output = new RunOutput(model, peft, config, folder);
        Directory.CreateDirectory(args.OutputDir);
        var allCallbacks = (callbacks ?? []).Append(new StopOnCancellation(cancellation));
        var trainerOptions = new TrainerOptions { Trainable = output.State, Callbacks = allCallbacks, Shuffle = config.Data.Shuffle, SaveFinal = output.SaveFinal };
        int pad = prefTokenizer.PadId, evalBatch = args.PerDeviceEvalBatchSize;

        TrainResult result;
        IReadOnlyDictionary<string, double>? evalMetrics = null;
        switch (config.Trainer)
        {
            case "dpo":
            case "orpo":
            {
                var trainPairs = PairBatch.Tokenize(train, prefTokenizer);
                var evalPairs = eval == null ? null : PairBatch.Tokenize(eval, prefTokenizer);
                CheckVocabulary(modelConfig, folder, trainPairs.SelectMany(p => new[] { p.Chosen.Ids, p.Rejected.Ids }));
                ITrainingObjective<PairBatch> objective = config.Trainer == "dpo"
                    ? new DpoObjective(model, options, trainPairs, evalPairs, evalBatch, pad, reference)
                    : new OrpoObjective(model, options, trainPairs, evalPairs, evalBatch, pad);
                var trainer = new Trainer<PairBatch>(model, args, objective, trainerOptions);
                result = trainer.Train();
                if (objective.CanEvaluate && !cancellation.IsCancellationRequested) evalMetrics = trainer.Evaluate();
                break;
            }
            case "kto":
            {
                int total = args.PerDeviceTrainBatchSize * args.GradientAccumulationSteps;
                var trainSet = UnpairedBatch.Tokenize(train, prefTokenizer, total);
                var evalSet = eval == null ? null : UnpairedBatch.Tokenize(eval, prefTokenizer, total);
                CheckVocabulary(modelConfig, folder, trainSet.Select(e => e.Sequence.Ids));
                var objective = new KtoObjective(model, options, trainSet, evalSet, evalBatch, pad, reference);
                var trainer = new Trainer<UnpairedBatch>(model, args, objective, trainerOptions);
                result = trainer.Train();
                if (objective.CanEvaluate && !cancellation.IsCancellationRequested) evalMetrics = trainer.Evaluate();
                break;
            }
            case "reward":
            {
                var trainPairs = RewardObjective.Tokenize(train, tokenizer, options.MaxLength);
                var evalPairs = eval == null ? null : RewardObjective.Tokenize(eval, tokenizer, options.MaxLength);
                CheckVocabulary(modelConfig, folder, trainPairs.SelectMany(p => new[] { p.Chosen.Ids, p.Rejected.Ids }));
                var objective = new RewardObjective((SequenceClassifier)model, options, trainPairs, evalPairs, evalBatch, modelConfig.PadTokenId ?? pad);
                var trainer = new Trainer<PairBatch>(model, args, objective, trainerOptions);
                result = trainer.Train();
                if (objective.CanEvaluate && !cancellation.IsCancellationRequested) evalMetrics = trainer.Evaluate();
                break;
            }
            default:
                throw new PeftSharpException($"training.trainer: '{config.Trainer}' is not a preference trainer.");
        }
        if (result.ResumedFrom != null) notices.Add($"resumed from {result.ResumedFrom}; trained to step {result.GlobalStep}.");
        notices.AddRange(result.Warnings);
        if (cancellation.IsCancellationRequested) notices.Add($"interrupted at step {result.GlobalStep}: a checkpoint was saved; resume with resume_from_checkpoint: true.");
        long modelBytes = Directory.EnumerateFiles(folder, "*.safetensors").Sum(f => new FileInfo(f).Length);

        var final = new List<(string, string)> { ("train loss", $"{result.TrainingLoss:F4}"), ("steps", result.GlobalStep.ToString()) };
        if (evalMetrics != null) final.AddRange(evalMetrics.Select(kv => (kv.Key, kv.Value.ToString("F4", System.Globalization.CultureInfo.InvariantCulture))));
        final.Add((peft != null ? "adapter size" : "model size", $"{output.Bytes / 1024.0:F1} KiB"));
        var logPath = Path.Combine(args.OutputDir, Checkpointing.MetricsFileName);
        var reportData = new ReportData
        {
            Title = $"PeftSharp {config.Trainer} ({config.Method}) run: {config.ModelNameOrPath}",
            Log = File.Exists(logPath) ? HtmlReport.ReadLog(logPath) : [],
            Config = config.Effective,
            Summary = [trainableLine, .. notices],
            FinalMetrics = final,
        };
        var report = HtmlReport.Write(args.OutputDir, reportData);
        return new FineTuningResult(config.Method, args.OutputDir, result, null, null, trainableLine, output.Bytes, modelBytes, report, notices)
        {
            Report = reportData,
            EvalMetrics = evalMetrics,
        };
    }

    private static void CheckVocabulary(ModelConfig modelConfig, string folder, IEnumerable<int[]> sequences)
    {
        int max = -1;
        foreach (var s in sequences) foreach (int id in s) max = Math.Max(max, id);
        if (max >= modelConfig.VocabSize)
            throw new PeftSharpException($"the tokenizer produces token id {max}, but the model in {folder} has vocab_size {modelConfig.VocabSize}: " +
                "the tokenizer does not belong to this model.");
    }
}
