using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Training;

namespace PeftSharp.Tests.Data;

/// <summary>
/// Parquet written by DuckDB (tests/tools/DatasetGolden), read through Parquet.Net; dataset folders resolved as
/// `datasets` resolves them (card configs, inferred layouts, the hub cache).
/// </summary>
public sealed class DatasetSourcesTests : IDisposable
{
    public static string Golden(params string[] parts) =>
        Path.Combine([TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "datasets", .. parts]);

    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-datasets").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void ReadsNestedMessagesFromSeveralSnappyRowGroups()
    {
        string file = Golden("smoltalk", "data", "all", "train-00000-of-00002.parquet");
        var records = ColumnarFiles.ReadParquet(file).ToList();
        Assert.Equal(3000, records.Count);
        // DuckDB wrote 2048 rows in the first row group, so row 2500 is row 452 of the second.
        var r = records[2500];
        Assert.Equal($"{file} (row 2500: row group 1, row 452)", r.Where);
        var messages = Assert.IsType<JsonArray>(r.Fields["messages"]);
        Assert.Equal("Question all 2500?", messages[0]!["content"]!.GetValue<string>());
        Assert.Equal("assistant", messages[1]!["role"]!.GetValue<string>());
        Assert.Equal("gen-1", r.Fields["source"]!.GetValue<string>());
    }

    [Fact]
    public void ReadsZstdGzipListsAndStructs()
    {
        var test = ColumnarFiles.ReadParquet(Golden("smoltalk", "data", "all", "test-00000-of-00001.parquet")).ToList();
        Assert.Equal(7, test.Count);
        Assert.Equal("Answer test 6.", test[6].Fields["messages"]![1]!["content"]!.GetValue<string>());
        var magpie = ColumnarFiles.ReadParquet(Golden("smoltalk", "data", "smol-magpie", "train-00000-of-00001.parquet")).ToList();
        Assert.Equal("Question magpie 4?", magpie[4].Fields["messages"]![0]!["content"]!.GetValue<string>());
        var nested = ColumnarFiles.ReadParquet(Golden("formats", "text_nested_columns.parquet")).ToList();
        Assert.Equal("""{"text":"Line 2","tags":["a2","b"],"meta":{"n":2,"name":"x2"}}""", nested[2].Fields.ToJsonString());
    }

    [Fact]
    public void CardConfigsChooseTheFilesOfEachSplit()
    {
        var all = DatasetSources.Resolve(Golden("smoltalk"), "all");
        Assert.Equal(["train", "test"], all.SplitNames);
        Assert.Equal(["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"], all.Splits["train"].Select(Path.GetFileName));
        var magpie = DatasetSources.Resolve(Golden("smoltalk"), "smol-magpie");
        Assert.Equal(["train"], magpie.SplitNames);

        var e = Assert.Throws<PeftSharpException>(() => DatasetSources.Resolve(Golden("smoltalk"), "al"));
        Assert.Contains("no config \"al\". Did you mean \"all\"? Available configs: all, smol-magpie.", e.Message);
        e = Assert.Throws<PeftSharpException>(() => DatasetSources.Resolve(Golden("smoltalk"), null));
        Assert.Contains("several configs; pick one of all, smol-magpie", e.Message);
        e = Assert.Throws<PeftSharpException>(() => all.Files("tset", "dataset_test_split"));
        Assert.Contains("no split \"tset\". Did you mean \"test\"? Available splits: train, test.", e.Message);
    }

    [Fact]
    public void InfersSplitsFromFileNamesWithoutACard()
    {
        var d = DatasetSources.Resolve(Golden("inferred"), null);
        Assert.Equal(["test", "train"], d.SplitNames.Order());
        Assert.Single(d.Splits["train"]);

        string folder = Path.Combine(_root, "plain");
        Directory.CreateDirectory(Path.Combine(folder, "validation"));
        File.WriteAllText(Path.Combine(folder, "my_train.jsonl"), "{\"text\": \"a\"}\n");
        File.WriteAllText(Path.Combine(folder, "test.jsonl"), "{\"text\": \"b\"}\n");
        File.WriteAllText(Path.Combine(folder, "README.md"), "# no front matter\n");
        var plain = DatasetSources.Resolve(folder, null);
        Assert.Equal(["test", "train"], plain.SplitNames.Order());

        string one = Path.Combine(_root, "one");
        Directory.CreateDirectory(one);
        File.WriteAllText(Path.Combine(one, "stuff.csv"), "text\nx\n");
        Assert.Equal(["train"], DatasetSources.Resolve(one, null).SplitNames);
        var e = Assert.Throws<PeftSharpException>(() => DatasetSources.Resolve(one, "all"));
        Assert.Contains("has no configs", e.Message);
    }

    [Fact]
    public void FindsAHubIdInTheHuggingFaceCache()
    {
        string hub = Path.Combine(_root, "hub");
        string repo = Path.Combine(hub, "datasets--HuggingFaceTB--smoltalk");
        string snapshot = Path.Combine(repo, "snapshots", "0123abc");
        CopyFolder(Golden("smoltalk"), snapshot);
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), "0123abc");
        Func<string, string?> env = name => name == "HF_HOME" ? _root : null;
        var d = DatasetSources.Resolve("HuggingFaceTB/smoltalk", "all", env);
        Assert.Equal(snapshot, d.Folder);
        Assert.Equal(2, d.Splits["train"].Count);

        var e = Assert.Throws<PeftSharpException>(() => DatasetSources.Resolve("HuggingFaceTB/smoltalk2", "all", env));
        Assert.Contains("datasets--HuggingFaceTB--smoltalk2", e.Message);
        Assert.Contains("huggingface-cli download --repo-type dataset HuggingFaceTB/smoltalk2", e.Message);
    }

    [Fact]
    public void BadParquetNamesTheFileRowAndColumn()
    {
        var args = new DataArguments();
        var e = Assert.Throws<PeftSharpException>(() =>
            SftData.Convert(ColumnarFiles.ReadParquet(Golden("bad", "null_role.parquet")).ToList(), args, []));
        Assert.Contains("null_role.parquet (row 2: row group 0, row 2): messages[0].role is missing (or null), expected a string.", e.Message);

        e = Assert.Throws<PeftSharpException>(() =>
            SftData.Convert(ColumnarFiles.ReadParquet(Golden("bad", "messages_string.parquet")).ToList(), args, []));
        Assert.Contains("messages_string.parquet (row 0: row group 0, row 0): field \"messages\" is a string, expected a list of messages", e.Message);

        string truncated = Path.Combine(_root, "cut.parquet");
        var bytes = File.ReadAllBytes(Golden("smoltalk", "data", "all", "train-00000-of-00002.parquet"));
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        e = Assert.Throws<PeftSharpException>(() => DataFiles.Read(truncated, "text", PlainTextMode.Lines, false, []));
        Assert.Contains("cut.parquet: not a readable Parquet file", e.Message);
    }

    [Fact]
    public void SplitKeyedJsonGivesTheSplitAskedFor()
    {
        string file = Path.Combine(_root, "splits.json");
        File.WriteAllText(file, """{"train": [{"text": "t1"}], "test": [{"text": "e1"}, {"text": "e2"}]}""");
        var args = new DataArguments { TrainFile = file, EvalFile = file };
        var bundle = SftData.Load(args, TinyTokenizer.Get(), null, seed: 1);
        Assert.Equal(["e1", "e2"], bundle.EvalExamples.Select(x => x.Text));
        Assert.Equal(1, bundle.TrainStats!.Examples);

        var e = Assert.Throws<PeftSharpException>(() => DataFiles.ReadJson(file, File.ReadAllText(file), split: "validation"));
        Assert.Contains("holds the splits train, test but not \"validation\"", e.Message);
    }

    internal static void CopyFolder(string from, string to)
    {
        foreach (var f in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, f));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(f, target);
        }
    }
}
