using System.Text.Json.Nodes;
using PeftSharp.Cli.Commands;
using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Config;

/// <summary>Configs written as TRL/transformers/PEFT users write them, and what a run must refuse or check before the weights load.</summary>
public sealed class TrlParityTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-parity").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Model(string arch = "llama", int? vocab = null)
    {
        string dir = Path.Combine(_root, $"model-{arch}-{vocab}");
        if (!Directory.Exists(dir))
            ModelInitializer.Write(dir, new InitModelOptions { Architecture = arch, Preset = "tiny", Seed = 2 });
        if (vocab is int v)
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            config["vocab_size"] = v;
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        }
        return dir;
    }

    private string Data()
    {
        string path = Path.Combine(_root, "data.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, 24).Select(i =>
            $$"""{"prompt": "User likes topic {{i % 5}}.", "completion": " I recommend video {{i}}."}"""));
        return path;
    }

    /// <summary>The training section of a TRL SFT script's SFTConfig, pasted as it is.</summary>
    [Fact]
    public void AConfigPastedFromATrlSftScriptTrainsWithoutEdits()
    {
        var yaml = $"""
            model:
              name_or_path: "{Model()}"
            lora:
              r: 8
              lora_alpha: 16
              lora_dropout: 0.05
              target_modules: [q_proj, v_proj]
              layers_to_transform: [0]
            data:
              train_file: "{Data()}"
              test_size: 4
            training:
              output_dir: "{Path.Combine(_root, "trl")}"
              run_name: smol-sft
              report_to: none
              logging_dir: "{Path.Combine(_root, "trl", "tb")}"
              bf16: true
              max_steps: 6
              per_device_train_batch_size: 4
              gradient_accumulation_steps: 2
              learning_rate: 2.0e-4
              lr_scheduler_type: cosine_with_min_lr
              lr_scheduler_kwargs:
                min_lr_rate: 0.1
              warmup_ratio: 0.1
              optim: adafactor
              logging_steps: 0.5
              eval_strategy: steps
              eval_steps: 0.5
              eval_on_start: true
              save_strategy: best
              metric_for_best_model: eval_loss
              load_best_model_at_end: true
              neftune_noise_alpha: 5
              max_length: 64
              packing: false
              packing_strategy: bfd
              padding_free: true
              eos_token: "{PeftSharp.Formats.Tokenizers.Tokenizer.FromFolder(Model()).EosToken}"
              completion_only_loss: true
            """;
        var config = RunConfig.FromTree(ConfigTree.ParseYaml(yaml));
        var output = new StringWriter();
        var result = TrainCommand.Run(config, output);
        Assert.Equal(6, result.Train.GlobalStep);
        Assert.Contains("bf16: true (autocast to bfloat16): ", output.ToString());
        Assert.Contains("multiply bf16-rounded activations and weights", output.ToString());
        var adapter = LoraConfig.Load(result.OutputDir);
        Assert.Equal([0], adapter.LayersToTransform);
        Assert.Equal("CAUSAL_LM", adapter.TaskType);
        // Only layer 0's q_proj and v_proj are wrapped.
        var keys = PeftSharp.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(result.OutputDir, PeftModel.WeightsFileName));
        using (keys) Assert.All(keys.Tensors.Select(t => t.Name), n => Assert.Contains("layers.0.", n));
    }

    [Fact]
    public void LayersToTransformComesFromYamlJsonAndSet()
    {
        string Base(string layers) => "{\"model\": {\"name_or_path\": \"m\"}, \"lora\": {\"r\": 4, \"target_modules\": [\"q_proj\"]" + layers +
            "}, \"data\": {\"train_file\": \"d.jsonl\"}}";
        Assert.Equal([0, 1], RunConfig.FromTree(ConfigTree.ParseYaml(Base(", \"layers_to_transform\": [0, 1]"))).Lora!.LayersToTransform);
        Assert.Equal([1], RunConfig.FromTree(ConfigTree.ParseYaml(Base(", \"layers_to_transform\": 1"))).Lora!.LayersToTransform);
        Assert.Equal([0], RunConfig.FromTree(ConfigTree.ParseYaml(Base("")), ["lora.layers_to_transform=[0]"]).Lora!.LayersToTransform);
        Assert.Equal([2], RunConfig.FromTree(ConfigTree.ParseYaml(Base("")), ["lora.layers_to_transform=2"]).Lora!.LayersToTransform);
        var e = Assert.Throws<PeftSharpException>(() => RunConfig.FromTree(ConfigTree.ParseYaml(Base(", \"layers_to_transform\": [-1]"))));
        Assert.Contains("layers_to_transform", e.Message);
    }

    [Fact]
    public void TaskTypeDefaultsToCausalLmAndOtherTaskTypesAreNotTrainedAsSft()
    {
        const string yaml = """{"model": {"name_or_path": "m"}, "lora": {"r": 4}, "data": {"train_file": "d.jsonl"}}""";
        Assert.Equal("CAUSAL_LM", RunConfig.FromTree(ConfigTree.ParseYaml(yaml)).Lora!.TaskType);
        var e = Assert.Throws<PeftSharpException>(() => RunConfig.FromTree(ConfigTree.ParseYaml(yaml), ["lora.task_type=SEQ_CLS"]));
        Assert.Contains("SEQ_CLS", e.Message);
    }

    [Theory]
    [InlineData("lora_bias", "true")]
    [InlineData("layer_replication", "[[0, 1]]")]
    [InlineData("trainable_token_indices", "[5, 6]")]
    [InlineData("target_parameters", "[\"experts.gate_up_proj\"]")]
    [InlineData("use_qalora", "true")]
    [InlineData("alora_invocation_tokens", "[1, 2]")]
    public void AnAdapterWithAFieldPeftSharpDoesNotImplementIsRefusedByName(string key, string value)
    {
        string dir = Path.Combine(_root, "adapter-" + key);
        Directory.CreateDirectory(dir);
        var config = JsonNode.Parse("""
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "lora_bias": false, "use_qalora": false,
             "layer_replication": null, "trainable_token_indices": null, "target_parameters": null, "task_type": "CAUSAL_LM"}
            """)!.AsObject();
        config[key] = JsonNode.Parse(value);
        File.WriteAllText(Path.Combine(dir, LoraConfig.FileName), config.ToJsonString());
        var e = Assert.Throws<PeftSharpException>(() => LoraConfig.Load(dir));
        Assert.Contains(key, e.Message);
        Assert.Contains("does not implement", e.Message);
    }

    [Fact]
    public void TheDefaultsPeftWritesForThoseFieldsLoad()
    {
        string dir = Path.Combine(_root, "adapter-defaults");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, LoraConfig.FileName), """
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "lora_bias": false, "use_qalora": false,
             "layer_replication": null, "trainable_token_indices": null, "target_parameters": null, "loftq_config": {}, "megatron_config": null}
            """);
        Assert.Equal(4, LoraConfig.Load(dir).R);
    }

    private RunConfig Run(string model, string data, string name) => RunConfig.FromTree(ConfigTree.ParseYaml($"""
        model:
          name_or_path: "{model}"
        lora:
          r: 4
          target_modules: [q_proj]
        data:
          train_file: "{data}"
        training:
          output_dir: "{Path.Combine(_root, name)}"
          max_steps: 1
        """));

    [Fact]
    public void AMissingDataFileIsReportedBeforeTheWeightsLoad()
    {
        string model = Path.Combine(_root, "broken-weights");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "llama", Preset = "tiny", Seed = 2 });
        File.WriteAllText(Path.Combine(model, "model.safetensors"), "not a safetensors file");
        // The data error, not the corrupt weights' error: the data is read first.
        var e = Assert.ThrowsAny<Exception>(() => FineTuning.Run(Run(model, Path.Combine(_root, "nope.jsonl"), "missing"), generationSamples: 0));
        Assert.Contains("nope.jsonl", e.Message);
    }

    [Fact]
    public void ATokenizerLargerThanTheModelsVocabularyIsRefusedBeforeTheWeightsLoad()
    {
        string model = Model("llama", vocab: 40); // the tiny tokenizer's ids go past 40
        var e = Assert.Throws<PeftSharpException>(() => FineTuning.Run(Run(model, Data(), "vocab"), generationSamples: 0));
        Assert.Contains("vocab_size 40", e.Message);
        Assert.Contains("does not belong to this model", e.Message);
    }

    [Fact]
    public void BleuAsTheBestMetricIsComputedAtEachEvaluation()
    {
        var config = RunConfig.FromTree(ConfigTree.ParseYaml($"""
            model:
              name_or_path: "{Model()}"
            lora:
              r: 4
              target_modules: [q_proj, v_proj]
            data:
              train_file: "{Data()}"
              test_size: 3
            training:
              output_dir: "{Path.Combine(_root, "bleu")}"
              max_steps: 4
              per_device_train_batch_size: 4
              eval_strategy: steps
              eval_steps: 2
              metric_for_best_model: bleu
              save_strategy: best
            """));
        var result = FineTuning.Run(config, generationSamples: 0, maxNewTokens: 4);
        var evals = File.ReadAllLines(Path.Combine(result.OutputDir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!.AsObject())
            .Where(o => o.ContainsKey("eval_loss")).ToList();
        Assert.Equal(2, evals.Count);
        Assert.All(evals, e => { Assert.True(e.ContainsKey("eval_bleu")); Assert.True(e.ContainsKey("eval_rouge_l")); });
        Assert.NotNull(result.Train.State.BestMetric);
    }
}

/// <summary>SFTConfig's data options: eos_token, chat_template_path, packing_strategy and padding_free.</summary>
public sealed class SftDataOptionTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-dataopts").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private static PeftSharp.Training.DataArguments Args(string yaml) =>
        PeftSharp.Training.DataArguments.FromJson(ConfigTree.ParseYaml(yaml).AsObject());

    private string Model()
    {
        string dir = Path.Combine(_root, "model");
        if (!Directory.Exists(dir)) ModelInitializer.Write(dir, new InitModelOptions { Architecture = "llama", Preset = "tiny", Seed = 2 });
        return dir;
    }

    private string Data(int n = 12)
    {
        string path = Path.Combine(_root, "data.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, n).Select(i => $$"""{"prompt": "Topic {{i}} please.", "completion": " Video number {{i * 7}} is good."}"""));
        return path;
    }

    [Fact]
    public void EosTokenIsTheTokenAppended()
    {
        var tokenizer = PeftSharp.Formats.Tokenizers.Tokenizer.FromFolder(Model());
        string other = tokenizer.BosToken!;
        int otherId = tokenizer.TokenToId(other)!.Value;
        Assert.NotEqual(tokenizer.EosTokenId, otherId);
        var data = PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\"\neos_token: \"{other}\""), tokenizer, null, 1);
        Assert.All(data.Train.Rows, r => Assert.Equal(otherId, r.InputIds[^1]));
        var plain = PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\""), tokenizer, null, 1);
        Assert.All(plain.Train.Rows, r => Assert.Equal(tokenizer.EosTokenId, r.InputIds[^1]));
        var e = Assert.Throws<PeftSharpException>(() => PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\"\neos_token: \"<nope>\""), tokenizer, null, 1));
        Assert.Contains("data.eos_token", e.Message);
    }

    [Fact]
    public void ChatTemplatePathTakesAJinjaFileOrATokenizerFolder()
    {
        string file = Path.Combine(_root, "template.jinja");
        File.WriteAllText(file, "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}");
        var fromFile = PeftSharp.Data.SftData.ChatTemplateFor(Args($"chat_template_path: \"{file}\""), null)!;
        Assert.Equal("<user>hi", fromFile.Render([PeftSharp.Formats.ChatTemplates.ChatMessage.User("hi")], addGenerationPrompt: false));
        string folder = Path.Combine(_root, "tok");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """{"chat_template": "[{{ messages[0]['content'] }}]"}""");
        var fromFolder = PeftSharp.Data.SftData.ChatTemplateFor(Args($"chat_template_path: \"{folder}\""), null)!;
        Assert.Equal("[hi]", fromFolder.Render([PeftSharp.Formats.ChatTemplates.ChatMessage.User("hi")], addGenerationPrompt: false));
        Assert.Throws<PeftSharpException>(() => PeftSharp.Data.SftData.ChatTemplateFor(Args($"chat_template_path: \"{file}\"\nchat_template: chatml"), null));
    }

    [Fact]
    public void WrappedPackingCutsOneStreamIntoFullRows()
    {
        var tokenizer = PeftSharp.Formats.Tokenizers.Tokenizer.FromFolder(Model());
        var bfd = PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\"\npacking: true\nmax_length: 23"), tokenizer, null, 1);
        var wrapped = PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\"\npacking: true\npacking_strategy: wrapped\nmax_length: 23"), tokenizer, null, 1);
        // bfd truncates each example to max_length first; wrapped keeps every token and fills every row but the last.
        Assert.All(bfd.Train.Rows, r => Assert.True(r.Length <= 23));
        var plain = PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\"\nmax_length: 100000"), tokenizer, null, 1);
        long stream = plain.Train.Rows.Sum(r => (long)r.Length);
        Assert.True(stream > bfd.Train.Rows.Sum(r => (long)r.Length), "the examples are longer than max_length");
        Assert.Equal(stream, wrapped.Train.Rows.Sum(r => (long)r.Length));
        Assert.All(wrapped.Train.Rows.SkipLast(1), r => Assert.Equal(23, r.Length));
        Assert.Equal((stream + 22) / 23, wrapped.Train.Count);
        Assert.Equal(plain.Train.Rows.SelectMany(r => r.InputIds), wrapped.Train.Rows.SelectMany(r => r.InputIds));
    }

    [Fact]
    public unsafe void PaddingFreeBatchesGiveThePaddedBatchesLoss()
    {
        var tokenizer = PeftSharp.Formats.Tokenizers.Tokenizer.FromFolder(Model());
        var padded = PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\""), tokenizer, null, 1).Train;
        var flat = PeftSharp.Data.SftData.Load(Args($"train_file: \"{Data()}\"\npadding_free: true"), tokenizer, null, 1).Train;
        using var model = PeftSharp.Models.CausalLM.Load(Model(), new PeftSharp.Models.LoadOptions());
        int[] rows = [0, 3, 5, 7];
        var a = padded.Collate(rows);
        var b = flat.Collate(rows);
        Assert.Equal(4, a.Batch);
        Assert.Equal(1, b.Batch);
        Assert.True(b.SeqLen < a.InputIds.Length, "no padding");
        Assert.Equal(PeftSharp.Data.SftDataset.TargetCount(a), PeftSharp.Data.SftDataset.TargetCount(b));
        float Loss(PeftSharp.Models.TokenBatch batch)
        {
            using var tape = new PeftSharp.Autograd.Tape { GradEnabled = false };
            return *model.Loss(new PeftSharp.Autograd.Ops(tape), batch).Data;
        }
        Assert.Equal(Loss(a), Loss(b), 4);
    }
}
