using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Recipes;
using PeftSharp.Tensors;
using PeftSharp.Training.Preference;

namespace PeftSharp.Tests.Training.Preference;

/// <summary>DPO, KTO and ORPO on a tiny GPT-2 through `peftsharp train`'s path, and DPO's start from a fresh adapter.</summary>
public sealed class PreferenceRunTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-pref").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Model(string arch = "gpt2")
    {
        string dir = Path.Combine(_root, "model-" + arch);
        if (!Directory.Exists(dir)) ModelInitializer.Write(dir, new InitModelOptions { Architecture = arch, Preset = "tiny", Seed = 5 });
        return dir;
    }

    private string PairData()
    {
        string path = Path.Combine(_root, "pairs.jsonl");
        if (!File.Exists(path))
            File.WriteAllLines(path, Enumerable.Range(0, 24).Select(i =>
                $$"""{"prompt": "I like topic {{i % 5}}. Suggest:", "chosen": " video {{i}} on topic {{i % 5}}", "rejected": " cats {{i}}!!"}"""));
        return path;
    }

    private string UnpairedData()
    {
        string path = Path.Combine(_root, "unpaired.jsonl");
        if (!File.Exists(path))
            File.WriteAllLines(path, Enumerable.Range(0, 24).Select(i =>
                $$"""{"prompt": "I like topic {{i % 5}}.", "completion": "{{(i % 2 == 0 ? $" video {i} on topic {i % 5}" : $" cats {i}!!")}}", "label": {{(i % 2 == 0 ? "true" : "false")}}}"""));
        return path;
    }

    private RunConfig Config(string trainer, string name, string section = "", string training = "  save_strategy: \"no\"", string data = "", string lora = "")
    {
        var yaml = $"""
            model:
              name_or_path: "{Model()}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [c_attn]
            {lora}
            data:
              train_file: "{(trainer == "kto" ? UnpairedData() : PairData())}"
            {data}
            training:
              trainer: {trainer}
              output_dir: "{Path.Combine(_root, name)}"
              max_steps: 6
              per_device_train_batch_size: 4
              learning_rate: 5.0e-3
              logging_steps: 1
              seed: 3
            {training}
            {section}
            """;
        return RunConfig.FromTree(ConfigTree.ParseYaml(yaml));
    }

    private static List<JsonObject> Log(FineTuningResult r) =>
        File.ReadLines(Path.Combine(r.OutputDir, "metrics.jsonl")).Select(l => (JsonObject)JsonNode.Parse(l)!).ToList();

    [Fact]
    public void AFreshAdapterStartsDpoAtLn2WithZeroRewards()
    {
        using var model = CausalLM.Load(Model());
        var tokenizer = Tokenizer.FromFolder(Model());
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.FromNames(["c_attn", "c_proj"]) }, rng: new Rng(1));
        var options = new PreferenceOptions();
        var skipped = new List<MalformedRecord>();
        var pairs = PairBatch.Tokenize(PreferenceData.Load(PairData(), null, false, skipped), new PreferenceTokenizer(tokenizer, options));
        var objective = new DpoObjective(model, options, pairs, null, 4, tokenizer.EosTokenId!.Value, new DisabledAdapterReference(peft));
        using var tape = new Tape();
        var result = objective.Accumulate(tape, objective.Collate([0, 1, 2, 3]), 1.0);
        Assert.Equal(Math.Log(2), result.Loss);
        foreach (var name in new[] { "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies" })
            Assert.Equal(0.0, result.Metrics![name]);
        Assert.True(result.Metrics!["logps/chosen"] < 0);
        // The gradient reaches the adapters' B (A's gradient is 0 while B = 0).
        Assert.Contains(peft.TrainableParameters, p => p.Name.Contains("lora_B") && p.GradSpan().ToArray().Any(g => g != 0));
    }

    [Theory]
    [InlineData("sigmoid", "")]
    [InlineData("ipo", "")]
    [InlineData("hinge", "")]
    [InlineData("robust", "  label_smoothing: 0.1")]
    [InlineData("sigmoid", "  rpo_alpha: 1.0\n  precompute_ref_log_probs: true")]
    public void DpoTrainsAndLogsTrlsMetrics(string lossType, string more)
    {
        var r = FineTuning.Run(Config("dpo", "dpo-" + lossType + more.Length, $"dpo:\n  loss_type: {lossType}\n  beta: 0.5\n{more}", data: "  test_size: 4"));
        Assert.Equal(6, r.Train.GlobalStep);
        var first = Log(r)[0];
        foreach (var name in DpoObjective.MetricNames) Assert.True(first.ContainsKey(name), name);
        Assert.True(File.Exists(Path.Combine(r.OutputDir, "adapter_model.safetensors")));
        Assert.NotNull(r.EvalMetrics);
        Assert.Contains("eval_rewards/accuracies", r.EvalMetrics!.Keys);
        var margins = Log(r).Where(l => l.ContainsKey("rewards/margins")).Select(l => (double)l["rewards/margins"]!).ToList();
        Assert.True(margins[^1] > margins[0], $"margins did not grow: {string.Join(", ", margins)}");
    }

    [Fact]
    public void DpoWithLoraDropoutAndAccumulationResumesByteIdentically()
    {
        const string section = "dpo:\n  disable_dropout: false";
        const string lora = "  lora_dropout: 0.1";
        string training = "  gradient_accumulation_steps: 2\n  save_strategy: steps\n  save_steps: 3";
        var full = FineTuning.Run(Config("dpo", "full", section, training, lora: lora));
        string part = Path.Combine(_root, "part");
        Directory.CreateDirectory(Path.Combine(part, "checkpoint-3"));
        foreach (var f in Directory.GetFiles(Path.Combine(full.OutputDir, "checkpoint-3")))
            File.Copy(f, Path.Combine(part, "checkpoint-3", Path.GetFileName(f)));
        var resumed = FineTuning.Run(Config("dpo", "part", section, training + "\n  resume_from_checkpoint: true", lora: lora));
        Assert.EndsWith("checkpoint-3", resumed.Train.ResumedFrom);
        Assert.Equal(full.Train.StepLosses.Skip(3), resumed.Train.StepLosses);
        Assert.Equal(File.ReadAllBytes(Path.Combine(full.OutputDir, "adapter_model.safetensors")),
            File.ReadAllBytes(Path.Combine(resumed.OutputDir, "adapter_model.safetensors")));
        // Dropout was on: the same run without it gives other bytes.
        var noDropout = FineTuning.Run(Config("dpo", "nodrop", "dpo:\n  disable_dropout: true", training, lora: lora));
        Assert.NotEqual(full.Train.StepLosses, noDropout.Train.StepLosses);
    }

    [Fact]
    public void ARefAdapterIsTheReferenceAndOnlyTheTrainedAdapterIsSaved()
    {
        // A first DPO run makes an adapter; a second run takes it as its reference (TRL's ref_adapter_name).
        var first = FineTuning.Run(Config("dpo", "dpo-ref-source"));
        string refAdapter = first.OutputDir;
        var second = FineTuning.Run(Config("dpo", "dpo-with-ref", section: $"dpo:\n  ref_adapter: \"{refAdapter}\""));
        Assert.Contains(second.Notices, n => n.Contains("the reference is the adapter in"));
        // Step 1: the policy (fresh adapter, B = 0) is the base, the reference is base + ref adapter: the rewards are not 0,
        // where with the base as reference they are exactly 0.
        var withRef = Log(second).First(e => e.ContainsKey("rewards/chosen"));
        var withBase = Log(first).First(e => e.ContainsKey("rewards/chosen"));
        Assert.Equal(0.0, (double)withBase["rewards/chosen"]!);
        Assert.NotEqual(0.0, (double)withRef["rewards/chosen"]!);
        // The saved adapter is the trained one alone, under PEFT's keys.
        using var saved = PeftSharp.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(second.OutputDir, PeftModel.WeightsFileName));
        using var source = PeftSharp.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(refAdapter, PeftModel.WeightsFileName));
        Assert.Equal(source.Names.OrderBy(n => n), saved.Names.OrderBy(n => n));
        Assert.DoesNotContain(saved.Names, n => n.Contains("reference"));
        var e = Assert.Throws<PeftSharpException>(() => FineTuning.Run(Config("dpo", "dpo-bad-ref", section: $"dpo:\n  ref_adapter: \"{refAdapter}\"\n  reference_free: true")));
        Assert.Contains("ref_adapter and reference_free", e.Message);
    }

    [Fact]
    public void DpoTrainsOnADatasetFolderAndEvaluatesOnItsTestSplit()
    {
        string dataset = Path.Combine(_root, "pref-dataset");
        Directory.CreateDirectory(dataset);
        var lines = File.ReadAllLines(PairData());
        File.WriteAllLines(Path.Combine(dataset, "train.jsonl"), lines.Take(20));
        File.WriteAllLines(Path.Combine(dataset, "test.jsonl"), lines.Skip(20));
        var yaml = $"""
            model:
              name_or_path: "{Model()}"
            lora:
              r: 4
              target_modules: [c_attn]
            data:
              dataset_name: "{dataset}"
            training:
              trainer: dpo
              output_dir: "{Path.Combine(_root, "dpo-dataset")}"
              max_steps: 2
              per_device_train_batch_size: 4
              save_strategy: "no"
              eval_strategy: steps
              eval_steps: 2
            """;
        var result = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml)));
        Assert.Contains(result.Notices, n => n.Contains("20 training examples (split \"train\")") && n.Contains("4 evaluation examples (split \"test\")"));
        Assert.Contains(Log(result), e => e.ContainsKey("eval_rewards/accuracies"));
    }

    /// <summary>
    /// KTO's rewards/logps of chosen and rejected are means over the desirable (undesirable) examples of the whole step, as TRL
    /// pools sums and counts: one example per micro-batch (half of them without a desirable example) logs what one micro-batch
    /// of the same four examples logs, not a mean of per-micro-batch means with zeros.
    /// </summary>
    [Fact]
    public void KtoStepMetricsArePooledOverTheStepsExamplesNotAveragedOverMicroBatches()
    {
        JsonObject FirstLog(string name, int perDevice, int accumulation)
        {
            var yaml = $"""
                model:
                  name_or_path: "{Model()}"
                lora:
                  r: 4
                  lora_alpha: 8
                  target_modules: [c_attn]
                data:
                  train_file: "{UnpairedData()}"
                  shuffle: false
                training:
                  trainer: kto
                  output_dir: "{Path.Combine(_root, name)}"
                  max_steps: 1
                  per_device_train_batch_size: {perDevice}
                  gradient_accumulation_steps: {accumulation}
                  logging_steps: 1
                  save_strategy: "no"
                kto:
                  beta: 0.5
                """;
            return Log(FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml))))[0];
        }
        var whole = FirstLog("kto-whole", 4, 1);
        var split = FirstLog("kto-split", 1, 4);
        foreach (var name in new[] { "logps/chosen", "logps/rejected" })
        {
            double a = (double)whole[name]!, b = (double)split[name]!;
            Assert.True(a < -1, $"{name} {a}: a sum of completion log-probs");
            Assert.Equal(a, b, 3);
        }
        Assert.Equal((double)split["rewards/chosen"]! - (double)split["rewards/rejected"]!, (double)split["rewards/margins"]!, 6);
    }

    [Fact]
    public void KtoAndOrpoTrainFromTheirData()
    {
        var kto = FineTuning.Run(Config("kto", "kto", "kto:\n  beta: 0.5\n  desirable_weight: 1.5"));
        var ktoLog = Log(kto);
        foreach (var name in KtoObjective.MetricNames) Assert.True(ktoLog[0].ContainsKey(name), name);
        Assert.True((double)ktoLog[^2]["rewards/margins"]! > (double)ktoLog[0]["rewards/margins"]!);
        var orpo = FineTuning.Run(Config("orpo", "orpo", "orpo:\n  beta: 0.5"));
        var orpoLog = Log(orpo);
        foreach (var name in OrpoObjective.MetricNames) Assert.True(orpoLog[0].ContainsKey(name), name);
        Assert.True(orpo.Train.StepLosses[^1] < orpo.Train.StepLosses[0]);
    }

    [Fact]
    public void RewardModelTrainsWithAScoreHeadAndScoresFromTheCli()
    {
        var r = FineTuning.Run(Config("reward", "reward", "reward:\n  center_rewards_coefficient: 0.01", data: "  test_size: 4"));
        var log = Log(r);
        foreach (var name in RewardObjective.MetricNames) Assert.True(log[0].ContainsKey(name), name);
        Assert.True(r.Train.StepLosses[^1] < r.Train.StepLosses[0], string.Join(", ", r.Train.StepLosses));
        Assert.Contains("eval_accuracy", r.EvalMetrics!.Keys);
        var saved = LoraConfig.Load(r.OutputDir);
        Assert.Equal("SEQ_CLS", saved.TaskType);
        Assert.Contains("score", saved.ModulesToSave!);
        using (var st = PeftSharp.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(r.OutputDir, PeftModel.WeightsFileName)))
            Assert.Equal([1L, 64L], st["base_model.model.score.weight"].Shape);

        var output = new StringWriter();
        PeftSharp.Cli.Commands.ScoreCommand.Run(Model(), r.OutputDir, PairData(), output);
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        Assert.Equal(24, lines.Count);
        int right = lines.Count(l => (double)l["chosen"]! > (double)l["rejected"]!);
        Assert.True(right >= 18, $"the trained reward model ranks {right}/24 pairs right");
    }

    [Fact]
    public void FullFineTunedRewardModelSavesAsASequenceClassifierAndScoresAsItDidInTraining()
    {
        var yaml = $"""
            model:
              name_or_path: "{Model("llama")}"
            data:
              train_file: "{PairData()}"
              eval_file: "{PairData()}"
            training:
              trainer: reward
              output_dir: "{Path.Combine(_root, "reward-full")}"
              max_steps: 6
              per_device_train_batch_size: 4
              learning_rate: 1.0e-3
              logging_steps: 1
              seed: 3
              save_strategy: "no"
            """;
        var r = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml)));
        Assert.Equal("full", r.Method);
        Assert.True(r.Train.StepLosses[^1] < r.Train.StepLosses[0], string.Join(", ", r.Train.StepLosses));

        // transformers' LlamaForSequenceClassification layout: the score head, no lm_head (the tiny llama's is untied), one label.
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(r.OutputDir, "config.json")))!;
        Assert.Equal("LlamaForSequenceClassification", (string)config["architectures"]![0]!);
        Assert.Equal("LABEL_0", (string)config["id2label"]!["0"]!);
        using (var st = PeftSharp.Formats.Safetensors.SafetensorsCheckpoint.Open(r.OutputDir))
        {
            Assert.True(st.TryGetTensor("score.weight", out var score));
            Assert.Equal([1L, 64L], score.Shape);
            Assert.False(st.TryGetTensor("lm_head.weight", out _));
        }

        // Reloaded from the folder, the model scores the pairs as the run's final evaluation did (the same pairs: eval_file).
        var output = new StringWriter();
        PeftSharp.Cli.Commands.ScoreCommand.Run(r.OutputDir, null, PairData(), output);
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        Assert.Equal(24, lines.Count);
        double margin = lines.Average(l => (double)l["chosen"]! - (double)l["rejected"]!);
        double accuracy = lines.Average(l => (double)l["chosen"]! > (double)l["rejected"]! ? 1.0 : 0.0);
        Assert.Equal(r.EvalMetrics!["eval_margin"], margin, 4);
        Assert.Equal(r.EvalMetrics!["eval_accuracy"], accuracy, 6);
    }

    [Fact]
    public void DpoRunsOnAQloraLlamaWithGradientCheckpointing()
    {
        var yaml = $"""
            model:
              name_or_path: "{Model("llama")}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [q_proj, v_proj]
            quantization:
              load_in_4bit: true
              bnb_4bit_quant_type: nf4
            data:
              train_file: "{PairData()}"
            training:
              trainer: dpo
              output_dir: "{Path.Combine(_root, "qlora")}"
              max_steps: 3
              per_device_train_batch_size: 4
              learning_rate: 5.0e-3
              logging_steps: 1
              save_strategy: "no"
            """;
        var config = RunConfig.FromTree(ConfigTree.ParseYaml(yaml));
        Assert.True(config.Training.GradientCheckpointing);
        var r = FineTuning.Run(config);
        Assert.Equal("qlora", r.Method);
        Assert.Equal(Math.Log(2), r.Train.StepLosses[0], 6);
        Assert.True(File.Exists(Path.Combine(r.OutputDir, "adapter_model.safetensors")));
    }

    [Fact]
    public void ConfigNamesTheTrainerAndRefusesMismatches()
    {
        Assert.Equal("dpo", Config("dpo", "x", "dpo:\n  beta: 0.2").Trainer);
        Assert.Equal(0.2, Config("dpo", "x", "dpo:\n  beta: 0.2").Preference!.Beta);
        Assert.Null(Config("dpo", "x", "dpo:\n  max_prompt_length: null").Preference!.MaxPromptLength);
        var e = Assert.Throws<PeftSharpException>(() => Config("dpo", "x", "kto:\n  beta: 0.2"));
        Assert.Contains("kto section", e.Message);
        e = Assert.Throws<PeftSharpException>(() => Config("dpo", "x", "dpo:\n  loss_type: exo"));
        Assert.Contains("loss_type", e.Message);
        e = Assert.Throws<PeftSharpException>(() => Config("dpo", "x", lora: "  task_type: SEQ_CLS"));
        Assert.Contains("SEQ_CLS", e.Message);
    }
}
