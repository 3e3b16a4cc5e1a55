using PeftSharp.Formats;
using PeftSharp.Peft;
using PeftSharp.Tests.Peft;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Hostile;

/// <summary>Issue 19, item 9: adapter names are never paths, and copying a model folder does not follow links out of it.</summary>
public sealed class PathSafetyTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-paths").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Theory]
    [InlineData("../../x")]
    [InlineData("..")]
    [InlineData("/tmp/evil")]
    [InlineData("a\\b")]
    [InlineData("sub/dir")]
    [InlineData("")]
    [InlineData("bad\0name")]
    public void An_adapter_name_that_is_a_path_is_refused_before_anything_is_written(string name)
    {
        var cfg = FakeCausalLM.TinyLlama();
        using var model = new FakeCausalLM(cfg, shapeOnly: false, new Rng(1));
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = TargetModules.AllLinear });
        var add = Assert.Throws<PeftSharpException>(() => peft.AddAdapter(name, new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = TargetModules.AllLinear }));
        Assert.Contains("an adapter name becomes a folder name", add.Message);
        string save = Path.Combine(_root, "save", "inner");
        var e = Assert.Throws<PeftSharpException>(() => peft.SaveAdapter(save, name));
        Assert.Contains($"Adapter name \"{name}\"", e.Message);
        Assert.False(Directory.Exists(Path.Combine(_root, "save")));
        Assert.Empty(Directory.GetFiles(_root, "*", SearchOption.AllDirectories));
    }

    [AssetFact]
    public void Quantize_does_not_copy_a_link_out_of_the_model_folder()
    {
        string model = Path.Combine(_root, "model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(TestAssets.Path("models", "stories260K-hf")))
            File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        string secret = Path.Combine(_root, "secret.txt");
        File.WriteAllText(secret, "private");
        File.CreateSymbolicLink(Path.Combine(model, "tokenizer_config.json"), secret);
        File.WriteAllText(Path.Combine(model, "real.json"), "{}");
        File.CreateSymbolicLink(Path.Combine(model, "inside.json"), Path.Combine(model, "real.json"));
        File.CreateSymbolicLink(Path.Combine(model, "dangling.json"), Path.Combine(_root, "missing"));

        string output = Path.Combine(_root, "out");
        var notices = new List<string>();
        QuantizedCheckpoint.Write(model, output, new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4" }, notices.Add);

        Assert.False(File.Exists(Path.Combine(output, "tokenizer_config.json")));
        Assert.False(File.Exists(Path.Combine(output, "dangling.json")));
        Assert.Equal("{}", File.ReadAllText(Path.Combine(output, "inside.json")));
        Assert.Null(new FileInfo(Path.Combine(output, "inside.json")).LinkTarget);
        Assert.Equal(2, notices.Count);
        Assert.Contains(notices, n => n.Contains("tokenizer_config.json: not copied") && n.Contains("outside the model folder"));
        Assert.Contains(notices, n => n.Contains("dangling.json: not copied"));
    }

    [Fact]
    public void A_hub_cache_snapshot_link_into_blobs_is_copied()
    {
        string repo = Path.Combine(_root, "models--x--y");
        string blobs = Path.Combine(repo, "blobs"), snapshot = Path.Combine(repo, "snapshots", "abc123");
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        File.WriteAllText(Path.Combine(blobs, "deadbeef"), "tok");
        File.CreateSymbolicLink(Path.Combine(snapshot, "tokenizer.json"), Path.Combine("..", "..", "blobs", "deadbeef"));
        string dest = Path.Combine(_root, "copy.json");
        Assert.True(FolderCopy.CopyFile(snapshot, Path.Combine(snapshot, "tokenizer.json"), dest));
        Assert.Equal("tok", File.ReadAllText(dest));
    }
}
