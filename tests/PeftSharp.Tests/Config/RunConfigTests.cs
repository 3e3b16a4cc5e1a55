using PeftSharp.Config;
using PeftSharp.Training;

namespace PeftSharp.Tests.Config;

public class RunConfigTests
{
    private const string Seed003 = """
        model:
          name_or_path: ./models/DeepSeek-R1-Distill-Qwen-1.5B
        lora:
          r: 16
          lora_alpha: 32
          target_modules: [q_proj, v_proj]
          lora_dropout: 0.05
          bias: none
          task_type: CAUSAL_LM
        data:
          train_file: data/train.jsonl
          max_length: 512
        training:
          output_dir: out/smoltalk
          learning_rate: 5e-5
          num_train_epochs: 3
          eval_strategy: epoch
          logging_strategy: epoch
          save_strategy: epoch
          lr_scheduler_type: cosine
          warmup_steps: 0.1
        """;

    private static RunConfig Parse(string yaml, params string[] overrides) =>
        RunConfig.FromTree(ConfigTree.ParseYaml(yaml), overrides);

    private static string Error(string yaml, params string[] overrides) =>
        Assert.Throws<PeftSharpException>(() => Parse(yaml, overrides)).Message;

    [Fact]
    public void ReadsPeftAndTrlNames()
    {
        var c = Parse(Seed003);
        Assert.Equal("lora", c.Method);
        Assert.Equal(16, c.Lora!.R);
        Assert.Equal(32, c.Lora.LoraAlpha);
        Assert.Equal(["q_proj", "v_proj"], c.Lora.TargetModules!.Names);
        Assert.Equal(0.05, c.Lora.LoraDropout);
        Assert.Equal(5e-5, c.Training.LearningRate);
        Assert.Equal(IntervalStrategy.Epoch, c.Training.EvalStrategy);
        Assert.Equal(512, c.Data.MaxLength);
        Assert.Equal(10, c.Training.WarmupStepsFor(100));
        Assert.Empty(c.Notices);
    }

    [Fact]
    public void DefaultsAreTrlsAndNoLoraMeansFullFineTuning()
    {
        var c = Parse("model: {name_or_path: m}\ndata: {train_file: t.jsonl}");
        Assert.Equal("full", c.Method);
        Assert.Null(c.Lora);
        Assert.Equal(2e-5, c.Training.LearningRate);
        Assert.Equal(3, c.Training.NumTrainEpochs);
        Assert.Equal(1024, c.Data.MaxLength);
        Assert.Equal("linear", c.Training.LrSchedulerType);
        Assert.Equal(1.0, c.Training.MaxGradNorm);
    }

    [Fact]
    public void UnknownKeySuggestsTheNearestName()
    {
        var e = Error(Seed003.Replace("lora_alpha: 32", "lora_alpah: 32"));
        Assert.Contains("lora: unknown key \"lora_alpah\"", e);
        Assert.Contains("Did you mean \"lora_alpha\"?", e);
    }

    [Fact]
    public void KeyInTheWrongSectionSaysWhereItBelongs()
    {
        Assert.Contains("\"learning_rate\" belongs in the \"training\" section", Error(Seed003.Replace("  r: 16", "  r: 16\n  learning_rate: 0.1")));
        Assert.Contains("unknown section \"trainig\". Did you mean \"training\"?", Error(Seed003.Replace("training:", "trainig:")));
    }

    [Theory]
    [InlineData("  r: 16", "  r: 0", "lora.r must be an integer in [1, inf)")]
    [InlineData("  lora_dropout: 0.05", "  lora_dropout: 1.5", "lora.lora_dropout must be a number in [0, 1)")]
    [InlineData("  r: 16", "  r: sixteen", "lora.r must be an integer")]
    [InlineData("  bias: none", "  bias: some", "lora.bias must be one of \"none\", \"all\", \"lora_only\"")]
    [InlineData("  lr_scheduler_type: cosine", "  lr_scheduler_type: cosin", "training.lr_scheduler_type must be one of")]
    [InlineData("  learning_rate: 5e-5", "  learning_rate: -1", "training.learning_rate must be a number in (0, inf)")]
    [InlineData("  warmup_steps: 0.1", "  warmup_steps: 2.5", "warmup_steps must be a whole number of steps, or a fraction")]
    public void WrongTypesAndRangesNameTheKeyAndTheRange(string from, string to, string message) =>
        Assert.Contains(message, Error(Seed003.Replace(from, to)));

    [Fact]
    public void LegacyNamesAreAcceptedWithANotice()
    {
        var c = Parse(Seed003.Replace("  max_length: 512\n", "").Replace("eval_strategy: epoch", "evaluation_strategy: epoch\n  max_seq_length: 256"));
        Assert.Equal(256, c.Data.MaxLength);
        Assert.Equal(IntervalStrategy.Epoch, c.Training.EvalStrategy);
        Assert.Equal(2, c.Notices.Count);
        Assert.Contains(c.Notices, n => n.Contains("max_seq_length is read as data.max_length"));
        Assert.Contains("both set", Error(Seed003.Replace("learning_rate: 5e-5", "learning_rate: 5e-5\n  max_seq_length: 256")));
    }

    [Fact]
    public void SetOverridesAreTypedLikeYaml()
    {
        var c = Parse(Seed003, "lora.r=8", "learning_rate=2e-4", "lora.target_modules=all-linear", "training.gradient_checkpointing=true");
        Assert.Equal(8, c.Lora!.R);
        Assert.Equal(2e-4, c.Training.LearningRate);
        Assert.True(c.Lora.TargetModules!.IsAllLinear);
        Assert.True(c.Training.GradientCheckpointing);
        Assert.Contains("no section has a key \"rr\"", Error(Seed003, "rr=3"));
    }

    [Fact]
    public void ResumeFromCheckpointTakesABoolOrAFolder()
    {
        Assert.Equal("true", Parse(Seed003, "training.resume_from_checkpoint=true").Training.ResumeFromCheckpoint);
        Assert.Null(Parse(Seed003, "training.resume_from_checkpoint=false").Training.ResumeFromCheckpoint);
        Assert.Equal("out/checkpoint-3", Parse(Seed003, "training.resume_from_checkpoint=out/checkpoint-3").Training.ResumeFromCheckpoint);
        Assert.Contains("resume_from_checkpoint", Error(Seed003, "training.resume_from_checkpoint=3"));
    }

    [Fact]
    public void QuantizationNeedsLoraAndRefuses8Bit()
    {
        var q = Parse(Seed003 + "\nquantization:\n  load_in_4bit: true\n  bnb_4bit_quant_type: nf4\n  bnb_4bit_use_double_quant: true\n  bnb_4bit_compute_dtype: bfloat16");
        Assert.Equal("qlora", q.Method);
        // prepare_model_for_kbit_training turns gradient checkpointing on unless the config says otherwise.
        Assert.True(q.Training.GradientCheckpointing);
        Assert.Contains(q.Notices, n => n.Contains("gradient_checkpointing is on"));
        var off = Parse(Seed003 + "\nquantization: {load_in_4bit: true}", "training.gradient_checkpointing=false");
        Assert.False(off.Training.GradientCheckpointing);
        Assert.DoesNotContain(off.Notices, n => n.Contains("gradient_checkpointing"));
        Assert.False(Parse(Seed003).Training.GradientCheckpointing);
        // Any storage bitsandbytes accepts (the packed bytes are the same), nothing else.
        var bf16Storage = Parse(Seed003 + "\nquantization: {load_in_4bit: true, bnb_4bit_quant_storage: bfloat16}");
        Assert.Equal("bfloat16", PeftSharp.Quantization.BitsAndBytesConfig.FromJson(bf16Storage.Quantization!).Bnb4bitQuantStorage);
        Assert.Contains("bnb_4bit_quant_storage", Error(Seed003 + "\nquantization: {load_in_4bit: true, bnb_4bit_quant_storage: int4}"));
        Assert.Contains("needs a lora section", Error("model: {name_or_path: m}\ndata: {train_file: t}\nquantization: {load_in_4bit: true}"));
        Assert.Contains("load_in_8bit is not supported", Error(Seed003 + "\nquantization: {load_in_8bit: true}"));
        Assert.Contains("bnb_4bit_quant_type must be one of \"nf4\", \"fp4\"", Error(Seed003 + "\nquantization: {load_in_4bit: true, bnb_4bit_quant_type: nf8}"));
    }

    [Fact]
    public void CrossKeyRulesAsTransformersChecksThem()
    {
        Assert.Contains("save_strategy to equal eval_strategy", Error(Seed003.Replace("save_strategy: epoch", "save_strategy: steps\n  load_best_model_at_end: true")));
    }

    [Fact]
    public void MalformedYamlNamesTheLine()
    {
        var e = Assert.Throws<PeftSharpException>(() => ConfigTree.ParseYaml("model:\n  name_or_path: m\n   dtype: auto\nlora:\n  r: 8"));
        Assert.Contains("malformed YAML at line 3", e.Message);
        Assert.Contains("malformed YAML", Assert.Throws<PeftSharpException>(() => ConfigTree.ParseYaml("model:\n  name_or_path: [unclosed\nlora:\n  r: 8")).Message);
    }

    [Fact]
    public void JsonConfigsWorkToo()
    {
        var c = RunConfig.FromTree(ConfigTree.ParseJson("""{"model": {"name_or_path": "m"}, "data": {"train_file": "t.jsonl"}, "lora": {"r": 4, "target_modules": "all-linear"}}"""));
        Assert.Equal(4, c.Lora!.R);
        Assert.True(c.Lora.TargetModules!.IsAllLinear);
    }
}
