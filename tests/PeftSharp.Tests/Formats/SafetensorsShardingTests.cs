using System.Text.Json.Nodes;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Formats;

public sealed class SafetensorsShardingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-shard-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static SafetensorsEntry Floats(string name, int n, float start) =>
        SafetensorsEntry.FromFloat32(name, [n], Enumerable.Range(0, n).Select(i => start + i).ToArray());

    [Fact]
    public void SplitsAboveTheLimitAndReadsBackThroughTheIndex()
    {
        // 40 + 40 + 80 + 200 + 8 bytes, limit 100. As huggingface_hub splits: "huge" goes straight into a
        // shard of its own while the open shard (c) stays open and later takes d.
        SafetensorsEntry[] entries = [Floats("a", 10, 0), Floats("b", 10, 100), Floats("c", 20, 200), Floats("huge", 50, 300), Floats("d", 2, 400)];
        var written = SafetensorsShardWriter.Write(_dir, entries, maxShardBytes: 100);
        Assert.Equal(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
            "model.safetensors.index.json"], written.Select(Path.GetFileName));

        string indexText = File.ReadAllText(Path.Combine(_dir, "model.safetensors.index.json"));
        Assert.StartsWith("{\n  \"metadata\": {\n    \"total_size\": 368\n  },\n  \"weight_map\": {\n    \"a\": \"model-00001-of-00003.safetensors\",", indexText);
        var map = JsonNode.Parse(indexText)!["weight_map"]!.AsObject();
        Assert.Equal(["a", "b", "c", "d", "huge"], map.Select(p => p.Key));
        Assert.Equal("model-00001-of-00003.safetensors", (string)map["b"]!);
        Assert.Equal("model-00002-of-00003.safetensors", (string)map["huge"]!);
        Assert.Equal("model-00003-of-00003.safetensors", (string)map["c"]!);
        Assert.Equal("model-00003-of-00003.safetensors", (string)map["d"]!);

        using var checkpoint = SafetensorsCheckpoint.Open(_dir);
        Assert.Equal(3, checkpoint.Files.Count);
        Assert.Equal(["a", "b", "c", "d", "huge"], checkpoint.Names);
        Assert.Equal(349f, checkpoint["huge"].ToFloat32()[49]);
        Assert.Equal(401f, checkpoint["d"].ToFloat32()[1]);
        Assert.Equal("pt", checkpoint["c"].File.Metadata["format"]);
        Assert.Throws<PeftSharpException>(() => checkpoint["e"]);
    }

    [Fact]
    public void FitsInOneFileWithoutAnIndex()
    {
        var written = SafetensorsShardWriter.Write(_dir, [Floats("a", 4, 0), Floats("b", 4, 0)], maxShardBytes: 1000);
        Assert.Equal(["model.safetensors"], written.Select(Path.GetFileName));
        using var checkpoint = SafetensorsCheckpoint.Open(_dir);
        Assert.Equal(2, checkpoint.Count);
    }

    [Fact]
    public void OpensAStandaloneFileByPath()
    {
        string path = Path.Combine(_dir, "adapter_model.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsEntry.FromBytes("x", DType.I32, [2], new byte[] { 1, 0, 0, 0, 2, 0, 0, 0 })]);
        using var byFile = SafetensorsCheckpoint.Open(path);
        Assert.Equal([1f, 2f], byFile["x"].ToFloat32());
        using var byFolder = SafetensorsCheckpoint.Open(_dir); // the folder's lone .safetensors
        Assert.True(byFolder.Contains("x"));
    }

    [Fact]
    public void RefusesAnIndexWithAMissingShardOrAWrongEntry()
    {
        SafetensorsShardWriter.Write(_dir, [Floats("a", 10, 0), Floats("b", 10, 0)], maxShardBytes: 40);
        string index = Path.Combine(_dir, "model.safetensors.index.json");
        var json = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        json["weight_map"]!["a"] = "model-00002-of-00002.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        var wrong = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_dir));
        Assert.Contains("'a'", wrong.Message);
        Assert.Contains("does not hold it", wrong.Message);

        File.Delete(Path.Combine(_dir, "model-00002-of-00002.safetensors"));
        var missing = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_dir));
        Assert.Contains("missing", missing.Message);

        json["weight_map"]!["a"] = "../elsewhere.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        Assert.Contains("not a file in the index's folder", Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_dir)).Message);
    }

    [Fact]
    public void RefusesAFolderWithoutWeights() =>
        Assert.Contains("no safetensors weights", Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(_dir)).Message);

    [AssetFact]
    public void OpensTheStoriesModelFolder()
    {
        using var checkpoint = SafetensorsCheckpoint.Open(TestAssets.Path("models", "stories260K-hf"));
        Assert.Equal([512L, 64L], checkpoint["model.embed_tokens.weight"].Shape);
        Assert.Equal(5 * 9 + 2, checkpoint.Count); // 9 tensors per layer, embeddings, final norm (tied head)
    }
}
