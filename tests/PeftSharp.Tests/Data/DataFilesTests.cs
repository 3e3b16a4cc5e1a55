using PeftSharp.Data;
using PeftSharp.Training;

namespace PeftSharp.Tests.Data;

public sealed class DataFilesTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "peftsharp-data-" + Guid.NewGuid().ToString("N"));

    public DataFilesTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public void JsonLinesMalformedLineNamesFileAndLine()
    {
        string path = Write("a.jsonl", "{\"text\": \"one\"}\n\n{\"text\": oops}\n");
        var e = Assert.Throws<PeftSharpException>(() => DataFiles.Read(path, "text", PlainTextMode.Lines, false, []));
        Assert.Contains("a.jsonl:3", e.Message);
        Assert.Contains("not valid JSON", e.Message);
    }

    [Fact]
    public void SkipMalformedCountsSkippedLinesAndKeepsTheRest()
    {
        string path = Write("b.jsonl", "{\"text\": \"one\"}\n[1,2]\n{\"text\": 5}\n{\"prompt\": \"p\"}\n{\"text\": \"two\"}\n");
        var args = new DataArguments { TrainFile = path, SkipMalformed = true, MaxLength = 64 };
        var bundle = SftData.Load(args, TinyTokenizer.Get(), null, 1);
        Assert.Equal(2, bundle.Train.Count);
        Assert.Equal([2, 3, 4], bundle.Skipped.Select(s => s.Line));
        Assert.Contains("is a number, expected a string", bundle.Skipped[1].Problem);
        Assert.Contains("missing field \"text\"", bundle.Skipped[2].Problem);
        Assert.Contains("skipped 3 malformed", Assert.Single(bundle.Notices));
        var strict = new DataArguments { TrainFile = path, MaxLength = 64 };
        var e = Assert.Throws<PeftSharpException>(() => SftData.Load(strict, TinyTokenizer.Get(), null, 1));
        Assert.Contains("b.jsonl:2", e.Message);
    }

    [Fact]
    public void JsonArrayAndTrainObjectGiveLineNumbers()
    {
        var a = DataFiles.ReadJson("x.json", "[\n {\"text\": \"a\"},\n {\"text\": \"b\"}\n]");
        Assert.Equal([2, 3], a.Select(r => r.Line));
        var b = DataFiles.ReadJson("y.json", "{\"version\": 1,\n \"train\": [\n\n {\"text\": \"a\"}]}");
        Assert.Equal(4, Assert.Single(b).Line);
        var e = Assert.Throws<PeftSharpException>(() => DataFiles.ReadJson("z.json", "[{\"text\": \"a\"},\n 3]"));
        Assert.Contains("z.json:2", e.Message);
        var skipped = new List<MalformedRecord>();
        Assert.Single(DataFiles.ReadJson("z.json", "[{\"text\": \"a\"},\n 3]", true, skipped));
        Assert.Equal(2, Assert.Single(skipped).Line);
        var c = DataFiles.ReadJson("w.json", "{\"data\": [{\"text\": \"q\"}]}");
        Assert.Equal("q", (string)Assert.Single(c).Fields["text"]!);
    }

    [Fact]
    public void CsvFollowsRfc4180Quoting()
    {
        var rows = Csv.Parse("prompt,completion\r\n\"a, b\",\"say \"\"hi\"\"\"\n\"multi\nline\",x\n");
        Assert.Equal(3, rows.Count);
        Assert.Equal(["a, b", "say \"hi\""], rows[1].Fields);
        Assert.Equal(["multi\nline", "x"], rows[2].Fields);
        Assert.Equal(3, rows[2].Line);
        var records = DataFiles.ReadCsv("d.csv", "prompt,completion\n1,2\n\"x\",\"y\",\"z\"\n", true, []);
        Assert.Single(records);
        Assert.Throws<PeftSharpException>(() => Csv.Parse("a,b\nx\"y,z\n", "q.csv"));
        Assert.Throws<PeftSharpException>(() => Csv.Parse("a,b\n\"x,z\n", "q.csv"));
    }

    [Fact]
    public void LoadSplitsTokenizesAndPacksConversationsFromCsvAndJsonl()
    {
        string csv = Write("pc.csv", "prompt,completion\n\"Q: 1, 2?\",\" three\"\nQ: x?, y\n\"Q: \"\"a\"\"?\",\" b\"\n");
        var pc = SftData.Load(new DataArguments { TrainFile = csv, MaxLength = 64, TestSize = 1 }, TinyTokenizer.Get(), null, 7);
        Assert.Equal(DatasetFormat.PromptCompletion, pc.Format);
        Assert.Equal(2, pc.Train.Count);
        Assert.Equal(1, pc.Eval!.Count);
        Assert.All(pc.Train.Rows, r => Assert.Equal(-100, r.Labels[0]));
        string chat = Write("c.jsonl", string.Concat(Enumerable.Range(0, 6).Select(i =>
            $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"q{i}\"}}, {{\"role\": \"assistant\", \"content\": \"a{i}\"}}]}}\n")));
        var template = PeftSharp.Formats.ChatTemplates.ChatTemplate.Builtin("chatml");
        var packed = SftData.Load(new DataArguments { TrainFile = chat, MaxLength = 64, Packing = true, AssistantOnlyLoss = true }, TinyTokenizer.Get(), template, 7);
        Assert.Equal(DatasetFormat.Conversational, packed.Format);
        Assert.True(packed.Train.Packed);
        Assert.True(packed.Train.Count < 6);
        var inLoss = packed.Train.Rows.SelectMany(r => r.InputIds.Where((_, t) => r.Labels[t] != -100)).ToArray();
        // Each assistant answer and the <|im_end|> closing it are trained.
        Assert.Equal(string.Concat(Enumerable.Range(0, 6).Select(i => $"a{i}<|im_end|>")).Order(), TinyTokenizer.Get().Decode(inLoss).Order());
    }

    [Fact]
    public void PlainTextIsOneExamplePerNonEmptyLine()
    {
        var r = DataFiles.ReadText("t.txt", "first\n\n  \nsecond\r\n", "text", PlainTextMode.Lines);
        Assert.Equal(["first", "second"], r.Select(x => (string)x.Fields["text"]!));
        Assert.Equal([1, 4], r.Select(x => x.Line));
    }

    [Fact]
    public void FormatsAreDetectedAsTrlDoes()
    {
        var recs = DataFiles.ReadJsonLines("f.jsonl",
            "{\"text\": \"t\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n" +
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}], \"completion\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n", false, []);
        Assert.Equal([DatasetFormat.Text, DatasetFormat.PromptCompletion, DatasetFormat.Conversational, DatasetFormat.ConversationalPromptCompletion],
            recs.Select(r => SftExamples.Detect(r.Fields, "text", r.Where)));
        var bad = DataFiles.ReadJsonLines("g.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n", false, []);
        var e = Assert.Throws<PeftSharpException>(() => SftExamples.Convert(bad[0], DatasetFormat.Conversational, "text"));
        Assert.Equal("g.jsonl:1: messages[0].content is a number, expected a string or a list of {\"type\": \"text\", \"text\"} parts.", e.Message);
        var none = DataFiles.ReadJsonLines("h.jsonl", "{\"foo\": 1}\n", false, []);
        Assert.Contains("h.jsonl:1: cannot tell the data format", Assert.Throws<PeftSharpException>(() => SftExamples.Detect(none[0].Fields, "text", none[0].Where)).Message);
    }

    [Fact]
    public void TrainTestSplitTakesCeilFractionOrCount()
    {
        var items = Enumerable.Range(0, 10).ToList();
        var (train, test) = SftData.TrainTestSplit(items, 0.25, 3);
        Assert.Equal(3, test.Count);
        Assert.Equal(7, train.Count);
        Assert.Equal(items, train.Concat(test).Order());
        var (train2, test2) = SftData.TrainTestSplit(items, 0.25, 3);
        Assert.Equal(test, test2);
        Assert.Equal(train, train2);
        Assert.Equal(4, SftData.TrainTestSplit(items, 4, 3).Test.Count);
        Assert.Throws<PeftSharpException>(() => SftData.TrainTestSplit(items, 10, 3));
    }
}
