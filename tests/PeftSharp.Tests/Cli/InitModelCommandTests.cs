using System.CommandLine;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Tests.Cli;

public sealed class InitModelCommandTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "peftsharp-initcli-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private static int Invoke(params string[] args)
    {
        var root = new RootCommand();
        root.Subcommands.Add(InitModelCommand.Create());
        return CliRunner.Run(root, args, TextWriter.Null);
    }

    [Fact]
    public void WritesTheFolderFromTheCommandLine()
    {
        string folder = Path.Combine(_root, "m");
        Assert.Equal(CliRunner.Ok, Invoke("init-model", "--arch", "mistral", "--preset", "small", "--seed", "4", "--out", folder));
        var config = (LlamaConfig)ModelConfig.Load(folder);
        Assert.Equal(("mistral", 256, 4, 8, 4), (config.ModelType, config.HiddenSize, config.LayerCount, config.HeadCount, config.KeyValueHeadCount));
        Assert.True(File.Exists(Path.Combine(folder, "model.safetensors")));
    }

    [Fact]
    public void ConfigOnlyWritesNoWeightsAndPrintsTheParameterCount()
    {
        string folder = Path.Combine(_root, "d");
        var output = new StringWriter();
        InitModelCommand.Run(new PeftSharp.Models.Init.InitModelOptions { Preset = "distilgpt2", ConfigOnly = true }, folder, output);
        Assert.Contains("81,912,576 parameters", output.ToString());
        Assert.False(File.Exists(Path.Combine(folder, "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(folder, "tokenizer.json")));
    }

    [Fact]
    public void DtypeOptionWritesBf16WeightsAndRejectsUnknownNames()
    {
        string folder = Path.Combine(_root, "b");
        Assert.Equal(CliRunner.Ok, Invoke("init-model", "--arch", "qwen2", "--dtype", "bf16", "--out", folder));
        Assert.Equal("bfloat16", ModelConfig.Load(folder).TorchDtype);
        using (var checkpoint = PeftSharp.Formats.Safetensors.SafetensorsCheckpoint.Open(folder))
            Assert.All(checkpoint.Tensors, t => Assert.Equal(PeftSharp.Tensors.DType.BF16, t.DType));

        var errors = new StringWriter();
        var root = new RootCommand();
        root.Subcommands.Add(InitModelCommand.Create());
        Assert.Equal(CliRunner.UserError, CliRunner.Run(root, ["init-model", "--arch", "qwen2", "--dtype", "int4", "--out", Path.Combine(_root, "z")], errors));
        Assert.Contains("--dtype 'int4'", errors.ToString());
        Assert.False(Directory.Exists(Path.Combine(_root, "z")));
    }

    [Fact]
    public void UserErrorsExitWithOne()
    {
        Assert.Equal(CliRunner.UserError, Invoke("init-model", "--preset", "tiny", "--out", Path.Combine(_root, "x")));
        Assert.Equal(CliRunner.UserError, Invoke("init-model", "--arch", "gpt2", "--preset", "enormous", "--out", Path.Combine(_root, "y")));
    }
}
