using System.CommandLine;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Config;
using PeftSharp.Models.Init;

namespace PeftSharp.Tests.Cli;

public sealed class TrainCommandTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-train").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private string Config(string model, string extra = "")
    {
        string data = Path.Combine(_root, "data.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 12).Select(i => $$"""{"prompt": "User likes topic {{i}}.", "completion": " I recommend 'Video {{i}}'"}"""));
        string path = Path.Combine(_root, "run.yaml");
        File.WriteAllText(path, $"""
            model:
              name_or_path: "{model}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [c_attn]
            data:
              train_file: data.jsonl
              test_size: 2
            training:
              output_dir: "{Path.Combine(_root, "out")}"
              max_steps: 3
              per_device_train_batch_size: 4
              save_strategy: steps
              save_steps: 2
            {extra}
            """);
        return path;
    }

    private static (int Code, string Error) RunCli(params string[] args)
    {
        var root = new RootCommand();
        root.Subcommands.Add(TrainCommand.Create());
        var error = new StringWriter();
        return (CliRunner.Run(root, args, error), error.ToString());
    }

    [Fact]
    public void BadConfigsAreUserErrorsThatNameTheKey()
    {
        string config = Config(Path.Combine(_root, "missing-model"));
        var (code, error) = RunCli("train", config, "--set", "lora.r=0");
        Assert.Equal(CliRunner.UserError, code);
        Assert.Contains("lora.r must be an integer in [1, inf)", error);
        (code, error) = RunCli("train", config, "--set", "lora.lora_alpah=3");
        Assert.Equal(CliRunner.UserError, code);
        Assert.Contains("Did you mean \"lora_alpha\"?", error);
        (code, error) = RunCli("train", config);
        Assert.Equal(CliRunner.UserError, code);
        Assert.Contains("missing-model", error);
    }

    [Fact]
    public void TrainsSavesAnAdapterAndCheckpointsAndPrintsTheSummary()
    {
        string model = Path.Combine(_root, "model");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 1 });
        var output = new StringWriter();
        var result = TrainCommand.Run(RunConfig.Load(Config(model)), output);

        string text = output.ToString();
        Assert.Contains("trainable params: ", text);
        Assert.Contains("fan_in_fan_out", text);
        Assert.Contains("report: ", text);
        Assert.Equal(3, result.Train.GlobalStep);
        Assert.True(Directory.Exists(Path.Combine(result.OutputDir, "checkpoint-2")));
        Assert.True(File.Exists(Path.Combine(result.OutputDir, "checkpoint-2", "adapter_config.json")));
        Assert.True(File.Exists(Path.Combine(result.OutputDir, "adapter_model.safetensors")));
    }
}
