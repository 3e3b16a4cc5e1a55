using PeftSharp.Formats;
using PeftSharp.Formats.Safetensors;

namespace PeftSharp.Tests.Formats;

public sealed class ModelFolderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-mf-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Func<string, string?> Env(params (string Key, string Value)[] vars)
    {
        var map = vars.ToDictionary(v => v.Key, v => v.Value);
        map.TryAdd("HOME", Path.Combine(_dir, "home"));
        return key => map.GetValueOrDefault(key);
    }

    private string FakeCache(string root, string id, string revision, bool writeRef = true)
    {
        string repo = Path.Combine(root, "models--" + id.Replace("/", "--"));
        string snapshot = Path.Combine(repo, "snapshots", revision);
        Directory.CreateDirectory(snapshot);
        if (writeRef)
        {
            Directory.CreateDirectory(Path.Combine(repo, "refs"));
            File.WriteAllText(Path.Combine(repo, "refs", "main"), revision + "\n");
        }
        return snapshot;
    }

    [Fact]
    public void ALocalFolderResolvesToItself()
    {
        string folder = Directory.CreateDirectory(Path.Combine(_dir, "my-model")).FullName;
        Assert.Equal(folder, ModelFolder.Resolve(folder, Env()));
    }

    [Fact]
    public void HubCacheFollowsHfHubCacheThenHfHomeThenTheHomeDefault()
    {
        string viaHubCache = FakeCache(Path.Combine(_dir, "hubcache"), "Org/Name", "aaa111");
        string viaHome = FakeCache(Path.Combine(_dir, "hfhome", "hub"), "Org/Name", "bbb222");
        string viaDefault = FakeCache(Path.Combine(_dir, "home", ".cache", "huggingface", "hub"), "Org/Name", "ccc333");

        Assert.Equal(viaHubCache, ModelFolder.Resolve("Org/Name", Env(("HF_HUB_CACHE", Path.Combine(_dir, "hubcache")), ("HF_HOME", Path.Combine(_dir, "hfhome")))));
        Assert.Equal(viaHome, ModelFolder.Resolve("Org/Name", Env(("HF_HOME", Path.Combine(_dir, "hfhome")))));
        Assert.Equal(viaDefault, ModelFolder.Resolve("Org/Name", Env()));
    }

    [Fact]
    public void RefsMainPicksTheSnapshotAndALoneSnapshotIsUsedWithoutIt()
    {
        string cache = Path.Combine(_dir, "cache");
        FakeCache(cache, "A/B", "old", writeRef: false);
        string current = FakeCache(cache, "A/B", "new");
        Assert.Equal(current, ModelFolder.Resolve("A/B", Env(("HF_HUB_CACHE", cache))));

        string lone = FakeCache(cache, "C/D", "only", writeRef: false);
        Assert.Equal(lone, ModelFolder.Resolve("C/D", Env(("HF_HUB_CACHE", cache))));
    }

    [Fact]
    public void AMissingModelListsThePlacesLookedAndHowToDownload()
    {
        string cache = Path.Combine(_dir, "cache");
        var e = Assert.Throws<PeftSharpException>(() => ModelFolder.Resolve("Qwen/Qwen2.5-0.5B", Env(("HF_HUB_CACHE", cache))));
        Assert.Contains("Looked in", e.Message);
        Assert.Contains(Path.Combine(cache, "models--Qwen--Qwen2.5-0.5B"), e.Message);
        Assert.Contains("HF_HUB_CACHE", e.Message);
        Assert.Contains("huggingface-cli download Qwen/Qwen2.5-0.5B --local-dir DIR", e.Message);

        var local = Assert.Throws<PeftSharpException>(() => ModelFolder.Resolve(Path.Combine(_dir, "nope", "x", "y"), Env()));
        Assert.Contains("does not exist", local.Message);
    }

    [Fact]
    public void ABrokenRefIsReported()
    {
        string cache = Path.Combine(_dir, "cache");
        string repo = Path.Combine(cache, "models--E--F");
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), "deadbeef");
        var e = Assert.Throws<PeftSharpException>(() => ModelFolder.Resolve("E/F", Env(("HF_HUB_CACHE", cache))));
        Assert.Contains("snapshots/deadbeef is missing", e.Message);
    }

    [Theory]
    [InlineData("Org/Name", true)]
    [InlineData("gpt2", false)]
    [InlineData("/abs/path", false)]
    [InlineData("a/b/c", false)]
    [InlineData("./x", false)]
    [InlineData("../x", false)]
    public void RecognisesHubIds(string reference, bool expected) => Assert.Equal(expected, ModelFolder.IsHubId(reference));

    [Fact]
    public void PickleCheckpointsAreRefusedWithConversionInstructions()
    {
        string folder = Directory.CreateDirectory(Path.Combine(_dir, "pickled")).FullName;
        File.WriteAllBytes(Path.Combine(folder, "pytorch_model.bin"), [0x80, 0x02]);
        var e = Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(folder));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("save_file", e.Message);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("not loaded", Assert.Throws<PeftSharpException>(() => SafetensorsCheckpoint.Open(Path.Combine(folder, "pytorch_model.bin"))).Message);
        Assert.False(PickleCheckpoint.IsPickleName("training_args.bin"));
    }
}
