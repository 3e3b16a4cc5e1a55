using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Training;

namespace PeftSharp.Tests.Data;

public sealed class TokenizationCacheTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-tokcache").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private const string FromCache = "tokenized training data read from the cache";

    private string WriteData(int n)
    {
        string data = Path.Combine(_root, "train.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, n).Select(i =>
            $$"""{"messages": [{"role": "user", "content": "Question {{i}} {{new string('?', i % 7)}}"}, {"role": "assistant", "content": "Answer {{i}} is {{i * i}}"}], "id": {{i}}}"""));
        return data;
    }

    /// <summary>Every row's ids, labels, positions and segments, as text to compare whole.</summary>
    private static string[] RowsOf(SftDataBundle bundle) =>
        bundle.Train.Rows.Select(r => string.Join(" | ", new[] { r.InputIds, r.Labels, r.PositionIds, r.SegmentIds }.Select(a => string.Join(",", a)))).ToArray();

    /// <summary>A load from the cache (or one that wrote it) gives exactly the rows and counts of a load without any cache.</summary>
    private static void AssertSameAsFresh(SftDataBundle cachedOrWritten, DataArguments args, Tokenizer tokenizer, ChatTemplate? template)
    {
        var fresh = SftData.Load(args, tokenizer, template, 1);
        Assert.Equal(fresh.TrainStats, cachedOrWritten.TrainStats);
        Assert.Equal(RowsOf(fresh), RowsOf(cachedOrWritten));
        Assert.Equal(fresh.Train.MaxTokenId(), cachedOrWritten.Train.MaxTokenId());
    }

    [AssetFact]
    public void ASecondLoadMapsTheCacheAndEveryKeyedChangeMissesIt()
    {
        string folder = TestAssets.Path("tokenizers", "qwen");
        var tokenizer = Tokenizer.FromFolder(folder);
        Assert.NotNull(tokenizer.Fingerprint);
        var template = ChatTemplate.FromTokenizerConfig(folder);
        string data = WriteData(40);
        string cache = Path.Combine(_root, "cache");
        DataArguments With(Action<DataArguments>? change = null)
        {
            var a = new DataArguments { TrainFile = data, AssistantOnlyLoss = true, MaxLength = 30 };
            change?.Invoke(a);
            return a;
        }
        var args = With();

        var first = SftData.Load(args, tokenizer, template, 1, cache);
        Assert.DoesNotContain(first.Notices, n => n.StartsWith(FromCache, StringComparison.Ordinal));
        string folderOfKey = Assert.Single(Directory.GetDirectories(cache));
        Assert.Equal(["ids.bin", "mask.bin", "meta.bin", "offsets.bin"], Directory.GetFiles(folderOfKey).Select(f => Path.GetFileName(f)!).Order().ToArray());
        var second = SftData.Load(args, tokenizer, template, 1, cache);
        Assert.Contains(second.Notices, n => n.StartsWith(FromCache, StringComparison.Ordinal));
        Assert.Contains("columns not used by conversational data: id.", second.Notices);
        AssertSameAsFresh(first, args, tokenizer, template);
        AssertSameAsFresh(second, args, tokenizer, template);
        // Packing is applied to the cached examples: the packed rows equal those packed from fresh ones.
        foreach (var packed in new[] { With(a => a.Packing = true), With(a => { a.Packing = true; a.PaddingFree = true; }) })
        {
            var fromCache = SftData.Load(packed, tokenizer, template, 1, cache);
            Assert.Contains(fromCache.Notices, n => n.StartsWith(FromCache, StringComparison.Ordinal));
            AssertSameAsFresh(fromCache, packed, tokenizer, template);
        }

        // Every setting that changes the examples is another key: the load tokenizes again, and gives what a fresh load gives.
        var llama3 = TestAssets.Path("tokenizers", "llama3");
        var changes = new (string What, DataArguments Args, Tokenizer Tokenizer, ChatTemplate? Template)[]
        {
            ("max_length", With(a => a.MaxLength = 31), tokenizer, template),
            ("assistant_only_loss", With(a => a.AssistantOnlyLoss = false), tokenizer, template),
            ("wrapped packing (no truncation)", With(a => { a.Packing = true; a.PackingStrategy = "wrapped"; }), tokenizer, template),
            ("eos_token", With(a => { a.AssistantOnlyLoss = false; a.EosToken = "<|endoftext|>"; }), tokenizer, template),
            ("template", args, tokenizer, SftData.ResolveChatTemplate("chatml", null)),
            ("tokenizer", args, Tokenizer.FromFolder(llama3), ChatTemplate.FromTokenizerConfig(llama3)),
            ("original settings again", args, tokenizer, template),
        };
        foreach (var (what, changed, tok, tpl) in changes)
        {
            var load = SftData.Load(changed, tok, tpl, 1, cache);
            Assert.False(load.Notices.Any(n => n.StartsWith(FromCache, StringComparison.Ordinal)), $"{what}: read from the cache");
            AssertSameAsFresh(load, changed, tok, tpl);
            // One folder per run folder: the stale key's files are gone.
            Assert.Single(Directory.GetFileSystemEntries(cache));
        }

        // The data file's modification time alone, then its size.
        File.SetLastWriteTimeUtc(data, File.GetLastWriteTimeUtc(data).AddSeconds(5));
        Assert.DoesNotContain(SftData.Load(args, tokenizer, template, 1, cache).Notices, n => n.StartsWith(FromCache, StringComparison.Ordinal));
        Assert.Contains(SftData.Load(args, tokenizer, template, 1, cache).Notices, n => n.StartsWith(FromCache, StringComparison.Ordinal));
        File.AppendAllText(data, """{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "id": 40}""" + "\n");
        var third = SftData.Load(args, tokenizer, template, 1, cache);
        Assert.Equal(41, third.TrainStats!.Examples);
        Assert.DoesNotContain(third.Notices, n => n.StartsWith(FromCache, StringComparison.Ordinal));
    }

    [AssetFact]
    public void ATornOrTruncatedCacheIsRebuiltNotReadNorCrashedOn()
    {
        string folder = TestAssets.Path("tokenizers", "qwen");
        var tokenizer = Tokenizer.FromFolder(folder);
        var template = ChatTemplate.FromTokenizerConfig(folder);
        string cache = Path.Combine(_root, "cache");
        var args = new DataArguments { TrainFile = WriteData(30), MaxLength = 40 };
        var first = SftData.Load(args, tokenizer, template, 1, cache);
        // Read now: the first load's rows are views of the files damaged below.
        var firstRows = RowsOf(first);
        string key = Assert.Single(Directory.GetDirectories(cache));
        var original = Directory.GetFiles(key).ToDictionary(f => Path.GetFileName(f)!, File.ReadAllBytes);

        var damages = new (string What, Action Damage)[]
        {
            ("ids.bin cut short", () => Truncate(Path.Combine(key, "ids.bin"), 4)),
            ("mask.bin cut short", () => Truncate(Path.Combine(key, "mask.bin"), 1)),
            ("offsets.bin cut short", () => Truncate(Path.Combine(key, "offsets.bin"), 8)),
            ("meta.bin cut short", () => Truncate(Path.Combine(key, "meta.bin"), 10)),
            ("meta.bin missing (a torn write)", () => File.Delete(Path.Combine(key, "meta.bin"))),
            ("offsets not rising", () => Patch(Path.Combine(key, "offsets.bin"), 8, BitConverter.GetBytes(1L << 40))),
            ("empty folder", () => { foreach (var f in Directory.GetFiles(key)) File.Delete(f); }),
        };
        foreach (var (what, damage) in damages)
        {
            damage();
            var load = SftData.Load(args, tokenizer, template, 1, cache);
            Assert.False(load.Notices.Any(n => n.StartsWith(FromCache, StringComparison.Ordinal)), $"{what}: read from the cache");
            Assert.Equal(first.TrainStats, load.TrainStats);
            Assert.Equal(firstRows, RowsOf(load));
            // Rebuilt byte for byte.
            foreach (var (name, bytes) in original) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(key, name)));
        }
        // A temp folder left by a killed run is removed by the next write; one of a process still running (pid 1) is left to it.
        Directory.Delete(key, true);
        string dead = key + ".tmp-2147483646-0dead", running = key + ".tmp-1-0abc";
        foreach (var temp in new[] { dead, running })
        {
            Directory.CreateDirectory(temp);
            File.WriteAllText(Path.Combine(temp, "ids.bin"), "torn");
        }
        SftData.Load(args, tokenizer, template, 1, cache);
        Assert.Equal([key, running], Directory.GetFileSystemEntries(cache).Order().ToArray());
    }

    private static void Truncate(string path, int bytes)
    {
        using var f = new FileStream(path, FileMode.Open);
        f.SetLength(f.Length - bytes);
    }

    private static void Patch(string path, long offset, byte[] bytes)
    {
        using var f = new FileStream(path, FileMode.Open);
        f.Position = offset;
        f.Write(bytes);
    }

    [Fact]
    public void MappedExamplesEqualFreshOnesBitForBitInEveryLayout()
    {
        var tokenization = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions { MaxLength = int.MaxValue });
        var examples = Enumerable.Range(0, 300).Select(i => SftExample.FromPromptCompletion($"p{i} " + new string('a', i % 13), $" c{i} " + new string('b', i % 29))).ToList();
        var tokenized = SftData.TokenizeAll(examples, tokenization);
        string path = TokenizationCache.PathFor(_root, "k");
        TokenStore mapped;
        using (var writer = new TokenizationCache.Writer(path))
        {
            foreach (var e in tokenized) writer.Append(e);
            mapped = writer.Commit(new TokenizationCache.Info(DatasetFormat.PromptCompletion, [], [], tokenized.Count, 0)).Train;
        }
        var reopened = TokenizationCache.TryOpen(path)!.Train;
        foreach (var store in new[] { mapped, reopened })
        {
            Assert.Equal(tokenized.Count, store.Count);
            for (int i = 0; i < tokenized.Count; i++)
            {
                Assert.Equal(tokenized[i].InputIds, store[i].InputIds);
                Assert.Equal(tokenized[i].InLoss, store[i].InLoss);
            }
            foreach (int max in new[] { 7, 16, 64 })
            {
                var layouts = new (SftDataset Fresh, SftDataset Mapped)[]
                {
                    (SftDataset.FromExamples(tokenized, 0), SftDataset.FromExamples(store, 0)),
                    (SftDataset.Pack(tokenized, 0, max), SftDataset.Pack(store, 0, max)),
                    (SftDataset.PackWrapped(tokenized, 0, max), SftDataset.PackWrapped(store, 0, max)),
                };
                foreach (var (fresh, fromStore) in layouts)
                {
                    Assert.Equal(fresh.Count, fromStore.Count);
                    for (int r = 0; r < fresh.Count; r++)
                    {
                        Assert.Equal(fresh.Rows[r].InputIds, fromStore.Rows[r].InputIds);
                        Assert.Equal(fresh.Rows[r].Labels, fromStore.Rows[r].Labels);
                        Assert.Equal(fresh.Rows[r].PositionIds, fromStore.Rows[r].PositionIds);
                        Assert.Equal(fresh.Rows[r].SegmentIds, fromStore.Rows[r].SegmentIds);
                    }
                    // The totals from the store's summary equal the counts over the rows.
                    var rows = fromStore.Rows.ToList();
                    Assert.Equal((rows.Sum(r => (long)r.Length), rows.Sum(r => (long)r.TargetCount)), fromStore.Totals());
                    Assert.Equal(rows.Max(r => r.InputIds.Max()), fromStore.MaxTokenId());
                }
            }
        }
    }

    [Fact]
    public void StreamingHoldsAtMostThreeChunksOfExamplesAndReportsProgress()
    {
        var tokenization = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions { MaxLength = 32 });
        const int n = 5000, chunk = 64;
        int produced = 0;
        IEnumerable<SftExample> Generate()
        {
            for (int i = 0; i < n; i++)
            {
                produced++;
                yield return SftExample.FromText($"row {i} " + new string('z', i % 50), $"f:{i}");
            }
        }
        var counters = new SftData.StreamCounters();
        var reports = new List<TokenizationProgress>();
        var writer = TokenStoreWriter.InMemory();
        SftData.TokenizeStreaming(Generate(), tokenization, writer, new SyncProgress(reports.Add), n, chunk, counters);
        var store = writer.Complete();

        Assert.Equal(n, produced);
        Assert.Equal((n + chunk - 1) / chunk, counters.Chunks);
        Assert.InRange(counters.PeakHeld, chunk, 3 * chunk);
        var expected = SftData.TokenizeAll(Generate().ToList(), new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions { MaxLength = 32 }));
        Assert.Equal(expected.Select(e => e.InputIds), store.Select(e => e.InputIds));
        Assert.Equal(expected.Select(e => e.InLoss), store.Select(e => e.InLoss));
        Assert.Equal(counters.Chunks + 1, reports.Count);
        Assert.Equal(0, reports[0].Rows);
        Assert.Equal(n, reports[^1].Rows);
        Assert.All(reports, r => Assert.Equal(n, r.TotalRows));
        Assert.Equal(Generate().Sum(e => (long)e.Text!.Length), reports[^1].TextBytes);
        Assert.StartsWith("tokenizing 5,000/5,000 rows, ", reports[^1].Describe());

        // An error in the stream surfaces and stops the reader; nothing of a failed cache write is left behind.
        IEnumerable<SftExample> Failing()
        {
            for (int i = 0; ; i++)
            {
                if (i == 1000) throw new PeftSharpException("f:1000: bad");
                yield return SftExample.FromText($"row {i}", $"f:{i}");
            }
        }
        string path = TokenizationCache.PathFor(_root, "failed");
        using (var cacheWriter = new TokenizationCache.Writer(path))
            Assert.Equal("f:1000: bad", Assert.Throws<PeftSharpException>(() => SftData.TokenizeStreaming(Failing(), tokenization, cacheWriter, null, null, chunk)).Message);
        Assert.Empty(Directory.GetFileSystemEntries(_root));
    }

    [AssetFact]
    public void LoadReportsProgressAgainstTheParquetRowCount()
    {
        string parquet = DatasetSourcesTests.Golden("formats", "sharegpt.parquet");
        long rows = ColumnarFiles.ReadParquet(parquet).Count();
        Assert.Equal(rows, ColumnarFiles.CountRows([parquet, parquet]) / 2);
        Assert.Null(ColumnarFiles.CountRows([parquet, WriteData(3)]));
        var tokenizer = Tokenizer.FromFolder(TestAssets.Path("tokenizers", "qwen"));
        var reports = new List<TokenizationProgress>();
        var bundle = SftData.Load(new DataArguments { TrainFile = parquet }, tokenizer, SftData.ResolveChatTemplate("chatml", null), 1, Path.Combine(_root, "cache"),
            new SyncProgress(reports.Add));
        Assert.Equal(rows, bundle.TrainStats!.Examples);
        Assert.All(reports, r => Assert.Equal(rows, r.TotalRows));
        Assert.Equal((0L, rows), (reports[0].Rows, reports[^1].Rows));
        Assert.True(reports[^1].TextBytes > 0);
    }

    /// <summary>IProgress that reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(Action<TokenizationProgress> report) : IProgress<TokenizationProgress>
    {
        public void Report(TokenizationProgress value) => report(value);
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
