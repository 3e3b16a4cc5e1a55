using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Training;

namespace PeftSharp.Tests.Data;

public sealed class TokenizationCacheTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-tokcache").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [AssetFact]
    public void ASecondLoadReadsTheCacheAndAnyChangeMissesIt()
    {
        string folder = TestAssets.Path("tokenizers", "qwen");
        var tokenizer = Tokenizer.FromFolder(folder);
        Assert.NotNull(tokenizer.Fingerprint);
        var template = ChatTemplate.FromTokenizerConfig(folder);
        string data = Path.Combine(_root, "train.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 40).Select(i =>
            $$"""{"messages": [{"role": "user", "content": "Question {{i}}"}, {"role": "assistant", "content": "Answer {{i}}"}], "id": {{i}}}"""));
        string cache = Path.Combine(_root, "cache");
        var args = new DataArguments { TrainFile = data, AssistantOnlyLoss = true, MaxLength = 30 };

        var first = SftData.Load(args, tokenizer, template, 1, cache);
        var file = Assert.Single(Directory.GetFiles(cache));
        var second = SftData.Load(args, tokenizer, template, 1, cache);
        Assert.Contains(second.Notices, n => n.StartsWith("tokenized training data read from the cache", StringComparison.Ordinal));
        Assert.Contains("columns not used by conversational data: id.", second.Notices);
        Assert.Equal(first.TrainStats, second.TrainStats);
        Assert.Equal(first.Train.Rows.Select(r => (r.InputIds, r.Labels)), second.Train.Rows.Select(r => (r.InputIds, r.Labels)));

        // Another max_length is another key; so is a changed data file.
        SftData.Load(new DataArguments { TrainFile = data, AssistantOnlyLoss = true, MaxLength = 31 }, tokenizer, template, 1, cache);
        Assert.Equal(2, Directory.GetFiles(cache).Length);
        File.AppendAllText(data, """{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "id": 40}""" + "\n");
        var third = SftData.Load(args, tokenizer, template, 1, cache);
        Assert.Equal(41, third.TrainStats!.Examples);
        Assert.DoesNotContain(third.Notices, n => n.StartsWith("tokenized training data read", StringComparison.Ordinal));

        // A torn cache file (of the current key) is ignored and rewritten.
        string current = Directory.GetFiles(cache).Except([file]).OrderBy(File.GetLastWriteTimeUtc).Last();
        var bytes = File.ReadAllBytes(current);
        File.WriteAllBytes(current, bytes[..(bytes.Length / 2)]);
        var fourth = SftData.Load(args, tokenizer, template, 1, cache);
        Assert.DoesNotContain(fourth.Notices, n => n.StartsWith("tokenized training data read", StringComparison.Ordinal));
        Assert.Equal(third.TrainStats, fourth.TrainStats);
        Assert.Equal(bytes, File.ReadAllBytes(current));
    }

    [Fact]
    public void ParallelTokenizationKeepsOrderAndReportsTheFirstBadExample()
    {
        var tokenization = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions { MaxLength = 16 });
        var examples = Enumerable.Range(0, 500).Select(i => SftExample.FromText($"text number {i} " + new string('x', i % 40), $"f:{i}")).ToList();
        var parallel = SftData.TokenizeAll(examples, tokenization);
        var sequential = examples.SelectMany(e => new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions { MaxLength = 16 }).Tokenize(e)).ToList();
        Assert.Equal(sequential.Select(e => e.InputIds), parallel.Select(e => e.InputIds));

        var chat = Enumerable.Range(0, 300).Select(i => SftExample.FromMessages([ChatMessage.User("q")], $"f:{i}")).ToList();
        var e = Assert.Throws<PeftSharpException>(() => SftData.TokenizeAll(chat, tokenization));
        Assert.StartsWith("f:0: conversational data needs a chat template", e.Message);
    }
}
