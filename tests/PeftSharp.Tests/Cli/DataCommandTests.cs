using System.Text.Json;
using PeftSharp.Cli.Commands;
using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Tests.Data;

namespace PeftSharp.Tests.Cli;

/// <summary>`peftsharp data` and `train` on a dataset folder (the smoltalk-shaped fixture written by DuckDB).</summary>
public sealed class DataCommandTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-data-cmd").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Config(string data, string training = "")
    {
        string model = Path.Combine(_root, "model");
        if (!Directory.Exists(model)) ModelInitializer.Write(model, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 1 });
        string path = Path.Combine(_root, "run.yaml");
        File.WriteAllText(path, $"""
            model:
              name_or_path: "{model}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [c_attn]
            data:
            {data}
            training:
              output_dir: "{Path.Combine(_root, "out")}"
            {training}
            """);
        return path;
    }

    [Fact]
    public void ShowsCountsAndTrainedTokensOfAnAssistantOnlyExample()
    {
        string smoltalk = Path.Combine(_root, "smoltalk");
        DatasetSourcesTests.CopyFolder(DatasetSourcesTests.Golden("smoltalk"), smoltalk);
        // dataset_name relative to the config file's folder.
        var config = RunConfig.Load(Config("  dataset_name: smoltalk\n  dataset_config: all\n  assistant_only_loss: true\n  max_length: 12"));
        var output = new StringWriter();
        var bundle = DataCommand.Run(config, output, show: 1, json: false);
        string text = output.ToString();
        Assert.Contains($"notice: dataset {smoltalk} (config \"all\"): 3010 training examples (split \"train\", 2 file(s)), 7 evaluation examples (split \"test\").", text);
        Assert.Contains("notice: columns not used by conversational data: source.", text);
        var train = bundle.TrainStats!;
        Assert.Equal((3010, 3010), (train.Examples, train.Rows));
        Assert.Equal(bundle.Train.Rows.Sum(r => (long)r.Length), train.Tokens);
        // Every conversation is longer than 12 tokens: all are cut to 12.
        Assert.Equal(3010, train.Truncated);
        Assert.All(bundle.Train.Rows, r => Assert.Equal(12, r.Length));
        Assert.Contains(DataCommand.Describe(train, false), text);
        Assert.Contains($"test: 7 examples, {bundle.EvalStats!.Tokens} tokens", text);

        // The full (untruncated) first row: the assistant's answer and its <|im_end|> are marked, the user's turn is not.
        var full = DataCommand.Run(RunConfig.Load(Config("  dataset_name: smoltalk\n  dataset_config: all\n  assistant_only_loss: true")), new StringWriter(), 0, false);
        var row = full.Train.Rows[0];
        var tokenizer = PeftSharp.Formats.Tokenizers.Tokenizer.FromFolder(Path.Combine(_root, "model"));
        string trained = tokenizer.Decode(row.InputIds.Where((_, t) => row.Labels[t] != -100).ToArray());
        Assert.Equal("Answer all 0.<|im_end|>", trained);

        output = new StringWriter();
        DataCommand.Run(RunConfig.Load(Config("  dataset_name: smoltalk\n  dataset_config: all\n  assistant_only_loss: true")), output, 1, false);
        var lines = output.ToString().Split('\n');
        // The run before tokenized the same data into the run's cache (as train does): this one maps it.
        Assert.Contains(lines, l => l.StartsWith("notice: tokenized training data read from the cache " + Path.Combine(_root, "out", "tokenized"), StringComparison.Ordinal));
        Assert.Contains(lines, l => l.TrimEnd().EndsWith($"{tokenizer.TokenToId("<|im_end|>")} + \"<|im_end|>\"", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("train row 0: ") && l.Contains($"{row.TargetCount} trained"));
    }

    [Fact]
    public void JsonPrintsOneObjectPerRowWithMaskedLabels()
    {
        string data = Path.Combine(_root, "pc.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 4).Select(i => $$"""{"prompt": "Say {{i}}:", "completion": " {{i}}!"}"""));
        var config = RunConfig.Load(Config($"  train_file: {data}\n  packing: true\n  max_length: 64"));
        var output = new StringWriter();
        var bundle = DataCommand.Run(config, output, show: 5, json: true);
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(bundle.Train.Count, lines.Length);
        using var doc = JsonDocument.Parse(lines[0]);
        var o = doc.RootElement;
        var ids = o.GetProperty("input_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var labels = o.GetProperty("labels").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var positions = o.GetProperty("position_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        Assert.Equal(bundle.Train.Rows[0].InputIds, ids);
        Assert.Equal(bundle.Train.Rows[0].Labels, labels);
        Assert.All(o.GetProperty("attention_mask").EnumerateArray(), x => Assert.Equal(1, x.GetInt32()));
        // Four packed examples: positions restart four times; the prompt tokens are masked (-100), completions kept.
        Assert.Equal(4, positions.Count(p => p == 0));
        Assert.Contains(-100, labels);
        Assert.Contains(labels, l => l != -100);
    }

    [Fact]
    public void TrainsOnTheTrainSplitAndEvaluatesOnTheTestSplit()
    {
        string path = Config($"  dataset_name: {DatasetSourcesTests.Golden("smoltalk")}\n  dataset_config: smol-magpie\n  dataset_test_split: train",
            "  max_steps: 2\n  per_device_train_batch_size: 2\n  eval_strategy: steps\n  eval_steps: 2");
        var output = new StringWriter();
        var result = TrainCommand.Run(RunConfig.Load(path), output);
        Assert.Contains("config \"smol-magpie\"): 5 training examples (split \"train\", 1 file(s)), 5 evaluation examples (split \"train\").", output.ToString());
        Assert.Equal(2, result.Train.GlobalStep);
        Assert.NotNull(result.Eval);

        var e = Assert.Throws<PeftSharpException>(() => PeftSharp.Data.SftData.Resolve(RunConfig.Load(Config(
            $"  dataset_name: {DatasetSourcesTests.Golden("smoltalk")}\n  dataset_config: all\n  dataset_test_split: validation")).Data));
        Assert.Contains("data.dataset_test_split: dataset", e.Message);
        Assert.Contains("has no split \"validation\"", e.Message);
    }

    [Fact]
    public void ConfigNeedsExactlyOneOfTrainFileAndDatasetName()
    {
        var e = Assert.Throws<PeftSharpException>(() => RunConfig.Load(Config("  dataset_name: x\n  train_file: y.jsonl")));
        Assert.Contains("data.train_file and data.dataset_name are both set", e.Message);
        e = Assert.Throws<PeftSharpException>(() => RunConfig.Load(Config("  max_length: 8")));
        Assert.Contains("data.train_file or data.dataset_name is required", e.Message);
    }

    [Fact]
    public void PreferenceDataIsRefusedBeforeTheModelLoads()
    {
        string pref = Path.Combine(_root, "pref.parquet");
        File.Copy(DatasetSourcesTests.Golden("formats", "preference.parquet"), pref);
        string config = Config($"  train_file: {pref}\n  skip_malformed: true");
        // The model folder keeps its tokenizer but loses its weights: the data error must come first.
        foreach (var f in Directory.GetFiles(Path.Combine(_root, "model"), "*.safetensors")) File.Delete(f);
        var e = Assert.ThrowsAny<PeftSharpException>(() => TrainCommand.Run(RunConfig.Load(config), new StringWriter()));
        Assert.Contains("pref.parquet: preference data (chosen/rejected) trains a preference model", e.Message);
    }
}
