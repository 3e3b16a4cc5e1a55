using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Tensors;
using PeftSharp.Training;

namespace PeftSharp.Data;

/// <summary>What one split became: examples read, tokens, examples cut to max_length, rows (packed or not) and tokens in the loss.</summary>
public sealed record SplitStats(string Split, int Examples, long Tokens, int Truncated, int Rows, long LossTokens)
{
    public double LossShare => Tokens == 0 ? 0 : (double)LossTokens / Tokens;
}

/// <summary>The loaded train and eval sets, and what the loader has to tell the user (skipped lines, the format found).</summary>
public sealed record SftDataBundle(SftDataset Train, SftDataset? Eval, DatasetFormat Format, IReadOnlyList<string> Notices,
    IReadOnlyList<MalformedRecord> Skipped)
{
    /// <summary>The evaluation examples before tokenization (for generation metrics and samples).</summary>
    public IReadOnlyList<SftExample> EvalExamples { get; init; } = [];
    public SplitStats? TrainStats { get; init; }
    public SplitStats? EvalStats { get; init; }
}

/// <summary>
/// How far tokenizing a training split has got: rows (examples) done, the total when the files give it up front (Parquet
/// metadata), the text tokenized so far (UTF-16 characters of the examples' strings, which equal bytes for ASCII text) and the time taken.
/// </summary>
public sealed record TokenizationProgress(long Rows, long? TotalRows, long TextBytes, TimeSpan Elapsed)
{
    public double MegabytesPerSecond => Elapsed.TotalSeconds > 0 ? TextBytes / 1e6 / Elapsed.TotalSeconds : 0;

    /// <summary>"tokenizing 120,000/1,000,000 rows, 21.4 MB/s".</summary>
    public string Describe() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"tokenizing {Rows:N0}{(TotalRows is long t ? $"/{t:N0}" : "")} rows, {MegabytesPerSecond:F1} MB/s");
}

/// <summary>The files of the train and eval splits a `data` section names, found before anything is read.</summary>
public sealed record DataSources(IReadOnlyList<string> TrainFiles, string TrainSplit, IReadOnlyList<string>? EvalFiles, string EvalSplit,
    string Description)
{
    public string TrainName => TrainFiles.Count == 1 ? TrainFiles[0] : $"{Description} split \"{TrainSplit}\"";
}

/// <summary>From the `data` section to datasets: read, detect the format, split, tokenize, pack.</summary>
public static class SftData
{
    /// <summary>
    /// The data files a `data` section names: train_file / eval_file, or dataset_name (+ dataset_config) with
    /// dataset_train_split and dataset_test_split (eval_file, when set, wins over the test split). Checks that every
    /// file and split exists, so a wrong path fails before a model loads.
    /// </summary>
    public static DataSources Resolve(DataArguments args, Func<string, string?>? environment = null)
    {
        string testSplit = args.DatasetTestSplit ?? "test";
        if (!string.IsNullOrEmpty(args.DatasetName))
        {
            var dataset = DatasetSources.Resolve(args.DatasetName, args.DatasetConfig, environment);
            var train = dataset.Files(args.DatasetTrainSplit, "dataset_train_split");
            IReadOnlyList<string>? eval = null;
            if (!string.IsNullOrEmpty(args.EvalFile)) eval = [RequireFile(args.EvalFile, "eval_file")];
            else if (args.DatasetTestSplit != null) eval = dataset.Files(args.DatasetTestSplit, "dataset_test_split");
            else if (args.TestSize == null && dataset.Splits.TryGetValue(testSplit, out var t)) eval = t;
            string description = $"{dataset.Folder}{(dataset.Config != null ? $" (config \"{dataset.Config}\")" : "")}";
            return new DataSources(train, args.DatasetTrainSplit, eval, testSplit, description);
        }
        if (string.IsNullOrEmpty(args.TrainFile)) throw new PeftSharpException("data.train_file or data.dataset_name is not set.");
        var evalFiles = string.IsNullOrEmpty(args.EvalFile) ? null : new[] { RequireFile(args.EvalFile, "eval_file") };
        return new DataSources([RequireFile(args.TrainFile, "train_file")], args.DatasetTrainSplit, evalFiles, testSplit, args.TrainFile);
    }

    /// <summary>
    /// <see cref="Resolve"/>, then the first record of the training split read and converted, so a wrong path,
    /// config or split, a file that is not readable, data with no usable column, or preference data all fail before a model loads.
    /// </summary>
    public static DataSources Validate(DataArguments args)
    {
        var sources = Resolve(args);
        // Parquet and Arrow are streamed, so the first record costs one row group; a large text file is checked when loaded.
        string firstFile = sources.TrainFiles[0];
        if (Path.GetExtension(firstFile).ToLowerInvariant() is ".parquet" or ".arrow" || new FileInfo(firstFile).Length < (64 << 20))
        {
            var first = ReadRecords([firstFile], sources.TrainSplit, args, []).FirstOrDefault();
            if (first != null) Convert([first], args, []);
        }
        return sources;
    }

    private static string RequireFile(string path, string key) =>
        File.Exists(path) ? path : throw new PeftSharpException($"data.{key}: data file not found: {path}.");

    /// <summary>
    /// The records of one split: every file in order (a JSON file holding splits gives the split asked for). Parquet and
    /// Arrow files are streamed a row group (record batch) at a time, so the records of a large split are never all in memory.
    /// </summary>
    public static IEnumerable<DataRecord> ReadRecords(IReadOnlyList<string> files, string split, DataArguments args, List<MalformedRecord> skipped)
    {
        var mode = args.TextFileMode == "whole" ? PlainTextMode.Whole : PlainTextMode.Lines;
        foreach (var file in files)
        {
            var records = Path.GetExtension(file).ToLowerInvariant() switch
            {
                ".parquet" => ColumnarFiles.ReadParquet(file),
                ".arrow" => ColumnarFiles.ReadArrow(file),
                _ => DataFiles.Read(file, args.DatasetTextField, mode, args.SkipMalformed, skipped, split),
            };
            foreach (var r in records) yield return r;
        }
    }

    /// <param name="seed">The split seed (training's data_seed, else seed).</param>
    /// <param name="cacheDirectory">Where tokenized training examples are cached (see <see cref="TokenizationCache"/>); null: no cache.</param>
    /// <param name="progress">Told how far tokenizing the training split has got (a chunk at a time).</param>
    /// <remarks>
    /// The training split is streamed: records are read and converted a chunk at a time on one thread while the previous
    /// chunk is tokenized on all cores, and each chunk's ids and masks go straight to the cache files (or a store in memory
    /// without a cache), so the text of at most a few chunks is in memory at once. A test_size split needs every example
    /// first, so it is read whole and not cached.
    /// </remarks>
    public static SftDataBundle Load(DataArguments args, Tokenizer tokenizer, ChatTemplate? chatTemplate, int seed, string? cacheDirectory = null,
        IProgress<TokenizationProgress>? progress = null)
    {
        var sources = Resolve(args);
        var skipped = new List<MalformedRecord>();
        var notices = new List<string>();
        var mode = args.TextFileMode == "whole" ? PlainTextMode.Whole : PlainTextMode.Lines;
        var options = new SftTokenizationOptions
        {
            // Wrapped packing cuts the whole stream into max_length rows: its examples are not truncated first.
            MaxLength = args.Packing && args.PackingStrategy == "wrapped" ? int.MaxValue : args.MaxLength,
            CompletionOnlyLoss = args.CompletionOnlyLoss,
            AssistantOnlyLoss = args.AssistantOnlyLoss,
            ChunkLongText = mode == PlainTextMode.Whole,
            EosTokenId = args.EosToken == null ? null : tokenizer.TokenToId(args.EosToken)
                ?? throw new PeftSharpException($"data.eos_token: \"{args.EosToken}\" is not a token of the tokenizer (its eos_token is \"{tokenizer.EosToken}\")."),
        };
        bool splitFromTrain = args.TestSize != null && sources.EvalFiles == null;
        // The cache holds the training split's tokenized examples; a test_size split draws evaluation from them, so it is not cached.
        string? cachePath = cacheDirectory != null && tokenizer.Fingerprint != null && args.TestSize == null
            ? TokenizationCache.PathFor(cacheDirectory, CacheKey(sources, args, tokenizer, chatTemplate, options))
            : null;
        var cached = cachePath != null ? TokenizationCache.TryOpen(cachePath) : null;

        var trainTokenization = new SftTokenization(tokenizer, chatTemplate, options);
        TokenizationCache.Info info;
        TokenStore trainStore;
        List<SftExample>? eval = null;
        if (cached != null)
        {
            (info, trainStore) = (cached.Info, cached.Train);
            skipped.AddRange(info.Skipped);
        }
        else
        {
            var state = new ConvertState();
            var records = ReadRecords(sources.TrainFiles, sources.TrainSplit, args, skipped);
            using var writer = cachePath != null ? new TokenizationCache.Writer(cachePath) : TokenStoreWriter.InMemory();
            if (splitFromTrain)
            {
                var all = ConvertStream(records, args, skipped, state).ToList();
                if (all.Count > 0)
                {
                    var (trainPart, testPart) = TrainTestSplit(all, args.TestSize!.Value, seed);
                    eval = testPart;
                    foreach (var e in TokenizeAll(trainPart, trainTokenization)) writer.Append(e);
                }
            }
            else
                TokenizeStreaming(ConvertStream(records, args, skipped, state), trainTokenization, writer, progress, ColumnarFiles.CountRows(sources.TrainFiles),
                    DefaultChunkSize);
            if (state.Examples == 0) throw new PeftSharpException($"{sources.TrainName}: no training examples.");
            var format = state.Format ?? DatasetFormat.Text;
            var unused = UnusedColumns(state.First, format, args.DatasetTextField);
            var trainNotices = unused.Count > 0 ? [$"columns not used by {SftExamples.Describe(format)}: {string.Join(", ", unused)}."] : new List<string>();
            info = new TokenizationCache.Info(format, trainNotices, [.. skipped], splitFromTrain ? state.Examples - eval!.Count : state.Examples,
                trainTokenization.Truncated);
            trainStore = writer is TokenizationCache.Writer w ? w.Commit(info).Train : writer.Complete();
        }
        notices.AddRange(info.Notices);
        if (sources.EvalFiles != null)
        {
            var evalRecords = ReadRecords(sources.EvalFiles, sources.EvalSplit, args, skipped);
            eval = Convert(evalRecords, args, skipped, info.Format).Examples;
        }
        if (!string.IsNullOrEmpty(args.DatasetName))
            notices.Insert(0, $"dataset {sources.Description}: {info.TrainExamples} training examples (split \"{sources.TrainSplit}\", {sources.TrainFiles.Count} file(s))" +
                (sources.EvalFiles != null && string.IsNullOrEmpty(args.EvalFile) ? $", {eval?.Count ?? 0} evaluation examples (split \"{sources.EvalSplit}\")" : "") + ".");
        if (skipped.Count > 0)
            notices.Add($"skipped {skipped.Count} malformed line(s); first: {skipped[0]}");

        var (trainSet, trainStats) = Build(trainStore, trainTokenization.PadId, args.Packing, args.MaxLength, sources.TrainSplit, info.TrainExamples,
            info.Truncated, args.PackingStrategy);
        trainSet.PaddingFree = args.PaddingFree;
        if (cached != null) notices.Add($"tokenized training data read from the cache {cachePath} (delete it to tokenize again).");
        SftDataset? evalSet = null;
        SplitStats? evalStats = null;
        if (eval != null)
        {
            var evalTokenization = new SftTokenization(tokenizer, chatTemplate, options);
            var tokenizedEval = TokenizeAll(eval, evalTokenization);
            (evalSet, evalStats) = Build(tokenizedEval, evalTokenization.PadId, packing: false, args.MaxLength, sources.EvalSplit, eval.Count, evalTokenization.Truncated);
        }
        return new SftDataBundle(trainSet, evalSet, info.Format, notices, skipped) { EvalExamples = eval ?? [], TrainStats = trainStats, EvalStats = evalStats };
    }

    /// <summary>Examples per chunk of the streamed training split.</summary>
    internal const int DefaultChunkSize = 4096;

    /// <summary>How many examples the streaming path holds at once (converted, not yet written to the store): the test of its bound.</summary>
    internal sealed class StreamCounters
    {
        private int _held;
        public int PeakHeld { get; private set; }
        public int Chunks { get; private set; }

        public void Add(int n)
        {
            lock (this)
            {
                _held += n;
                PeakHeld = Math.Max(PeakHeld, _held);
                if (n < 0) Chunks++;
            }
        }
    }

    /// <summary>
    /// Tokenizes a stream of examples into <paramref name="writer"/> in order, <paramref name="chunkSize"/> examples at a time: one
    /// thread reads and converts the next chunk (at most one waits) while the current one is tokenized on all cores
    /// (<see cref="TokenizeAll"/>) and appended, so at most three chunks of examples are held at once. Errors surface in order
    /// of the stream as far as a sequential pass would meet them chunk by chunk.
    /// </summary>
    internal static void TokenizeStreaming(IEnumerable<SftExample> examples, SftTokenization tokenization, TokenStoreWriter writer,
        IProgress<TokenizationProgress>? progress, long? totalRows, int chunkSize, StreamCounters? counters = null)
    {
        using var queue = new System.Collections.Concurrent.BlockingCollection<(List<SftExample> Chunk, long Bytes)>(boundedCapacity: 1);
        using var stop = new CancellationTokenSource();
        var producer = Task.Run(() =>
        {
            try
            {
                var chunk = new List<SftExample>(chunkSize);
                long bytes = 0;
                foreach (var e in examples)
                {
                    chunk.Add(e);
                    counters?.Add(1);
                    bytes += TextBytes(e);
                    if (chunk.Count < chunkSize) continue;
                    queue.Add((chunk, bytes), stop.Token);
                    (chunk, bytes) = (new List<SftExample>(chunkSize), 0);
                }
                if (chunk.Count > 0) queue.Add((chunk, bytes), stop.Token);
            }
            finally { queue.CompleteAdding(); }
        });
        var watch = System.Diagnostics.Stopwatch.StartNew();
        long rows = 0, textBytes = 0;
        try
        {
            progress?.Report(new TokenizationProgress(0, totalRows, 0, TimeSpan.Zero));
            foreach (var (chunk, bytes) in queue.GetConsumingEnumerable())
            {
                foreach (var e in TokenizeAll(chunk, tokenization)) writer.Append(e);
                counters?.Add(-chunk.Count);
                rows += chunk.Count;
                textBytes += bytes;
                progress?.Report(new TokenizationProgress(rows, totalRows, textBytes, watch.Elapsed));
            }
        }
        catch
        {
            stop.Cancel();
            try { producer.Wait(); } catch (AggregateException) { }
            throw;
        }
        try { producer.GetAwaiter().GetResult(); }
        catch (OperationCanceledException) { }
    }

    /// <summary>The UTF-16 length of an example's text (its strings and message contents), for the MB/s of progress.</summary>
    private static long TextBytes(SftExample e)
    {
        long n = (e.Text?.Length ?? 0) + (e.Prompt?.Length ?? 0) + (e.Completion?.Length ?? 0);
        foreach (var list in new[] { e.Messages, e.PromptMessages, e.CompletionMessages })
            if (list != null)
                foreach (var m in list) n += m.Content?.Length ?? 0;
        return n;
    }

    /// <summary>Everything that changes the tokenized training examples.</summary>
    private static string CacheKey(DataSources sources, DataArguments args, Tokenizer tokenizer, ChatTemplate? template, SftTokenizationOptions options) =>
        TokenizationCache.Key([
            "train", sources.TrainSplit, .. sources.TrainFiles.Select(TokenizationCache.FileIdentity),
            "tokenizer", tokenizer.Fingerprint!,
            "template", template?.Source ?? "", .. (template?.Variables ?? new Dictionary<string, object?>()).OrderBy(v => v.Key, StringComparer.Ordinal).Select(v => $"{v.Key}={v.Value}"),
            "options", options.ToString(), args.Format, args.DatasetTextField, args.TextFileMode, args.SkipMalformed.ToString(),
        ]);

    /// <summary>
    /// Tokenizes every example on all cores (the tokenizer and templates are thread-safe), keeping the examples' order; a
    /// bad example throws the error of the first one in order, as a sequential pass would.
    /// </summary>
    public static List<TokenizedExample> TokenizeAll(IReadOnlyList<SftExample> examples, SftTokenization tokenization)
    {
        var results = new List<TokenizedExample>[examples.Count];
        var errors = new Exception?[examples.Count];
        Parallel.ForEach(System.Collections.Concurrent.Partitioner.Create(0, examples.Count, 64), range =>
        {
            for (int i = range.Item1; i < range.Item2; i++)
            {
                try { results[i] = tokenization.Tokenize(examples[i]).ToList(); }
                catch (Exception e) { errors[i] = e; return; }
            }
        });
        foreach (var e in errors)
            if (e != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
        var all = new List<TokenizedExample>(examples.Count);
        foreach (var r in results) all.AddRange(r.Where(e => e.Length > 0));
        return all;
    }

    /// <summary>Columns of the first record that the format does not read (kept out of training, as TRL ignores them; listed so nothing is ignored silently).</summary>
    private static List<string> UnusedColumns(DataRecord? first, DatasetFormat format, string textField)
    {
        if (first == null) return [];
        string[] used = format switch
        {
            DatasetFormat.Text => [textField],
            DatasetFormat.PromptCompletion => ["prompt", "completion"],
            DatasetFormat.ConversationalPromptCompletion => ["prompt", "completion", "tools"],
            _ => ["messages", "conversations", "tools"],
        };
        return first.Fields.Select(p => p.Key).Where(k => !used.Contains(k)).ToList();
    }

    /// <summary>Packs (or not) tokenized examples, with the split's counts.</summary>
    public static (SftDataset Set, SplitStats Stats) Build(IReadOnlyList<TokenizedExample> tokenized, int padId, bool packing, int maxLength, string split,
        int examples, int truncated, string packingStrategy = "bfd")
    {
        var set = !packing ? SftDataset.FromExamples(tokenized, padId)
            : packingStrategy == "wrapped" ? SftDataset.PackWrapped(tokenized, padId, maxLength)
            : SftDataset.Pack(tokenized, padId, maxLength);
        var (tokens, loss) = set.Totals();
        return (set, new SplitStats(split, examples, tokens, truncated, set.Count, loss));
    }

    /// <summary>
    /// The chat template data.chat_template names: a built-in format (chatml, llama3, llama2, zephyr), a Jinja
    /// source (it contains "{{" or "{%"), else the model folder's tokenizer_config.json template; null when
    /// neither is given.
    /// </summary>
    public static ChatTemplate? ResolveChatTemplate(string? chatTemplate, string? modelFolder) => Models.Generation.ChatTemplates.Resolve(chatTemplate, modelFolder);

    /// <summary>
    /// The data section's template: chat_template (a built-in name or Jinja source), or chat_template_path (a Jinja file,
    /// or a tokenizer folder or its tokenizer_config.json, as TRL clones a template from it), else the model folder's.
    /// </summary>
    public static ChatTemplate? ChatTemplateFor(DataArguments args, string? modelFolder)
    {
        if (args.ChatTemplatePath is not { } path) return ResolveChatTemplate(args.ChatTemplate, modelFolder);
        if (!string.IsNullOrEmpty(args.ChatTemplate))
            throw new PeftSharpException("data: chat_template and chat_template_path are both set; keep one.");
        if (Directory.Exists(path)) return ChatTemplate.FromTokenizerConfig(path);
        if (!File.Exists(path)) throw new PeftSharpException($"data.chat_template_path: {path} is neither a file nor a folder.");
        if (Path.GetFileName(path) == "tokenizer_config.json") return ChatTemplate.FromTokenizerConfig(Path.GetDirectoryName(Path.GetFullPath(path))!);
        string source = File.ReadAllText(path);
        if (!(source.Contains("{{") || source.Contains("{%")))
            throw new PeftSharpException($"data.chat_template_path: {path} holds no Jinja template ({{{{ … }}}} or {{% … %}}).");
        return ChatTemplate.Parse(source);
    }

    public static SftDataset Build(IReadOnlyList<SftExample> examples, SftTokenization tokenization, bool packing, int maxLength) =>
        Build(TokenizeAll(examples, tokenization), tokenization.PadId, packing, maxLength, "train", examples.Count, tokenization.Truncated).Set;

    /// <summary>Detects (or takes) the format from the first record and converts every record, skipping or throwing on bad ones.</summary>
    public static (DatasetFormat Format, List<SftExample> Examples) Convert(IEnumerable<DataRecord> records, DataArguments args,
        List<MalformedRecord> skipped, DatasetFormat? known = null)
    {
        var state = new ConvertState { Format = known };
        var examples = ConvertStream(records, args, skipped, state).ToList();
        return (state.Format ?? DatasetFormat.Text, examples);
    }

    /// <summary>The format found so far, the examples converted and the first record read, of a <see cref="ConvertStream"/>.</summary>
    internal sealed class ConvertState
    {
        public DatasetFormat? Format;
        public int Examples;
        public DataRecord? First;
    }

    /// <summary><see cref="Convert"/> one record at a time: the examples as the records are read.</summary>
    internal static IEnumerable<SftExample> ConvertStream(IEnumerable<DataRecord> records, DataArguments args, List<MalformedRecord> skipped, ConvertState state)
    {
        state.Format ??= args.Format == "auto" ? null : SftExamples.ParseFormat(args.Format);
        foreach (var r in records)
        {
            state.First ??= r;
            SftExample e;
            try
            {
                var format = state.Format ??= SftExamples.Detect(r.Fields, args.DatasetTextField, r.Where);
                if (format is DatasetFormat.Preference or DatasetFormat.UnpairedPreference)
                    throw new PreferenceDataException($"{r.File}: {SftExamples.Describe(format)} trains a preference model (DPO, ORPO, KTO, a reward model), " +
                        $"not SFT; SFT needs text, prompt/completion or messages. Columns: {string.Join(", ", r.Fields.Select(p => p.Key))}.");
                e = SftExamples.Convert(r, format, args.DatasetTextField);
                if (format == DatasetFormat.PromptCompletion && e.Format == DatasetFormat.ConversationalPromptCompletion)
                    state.Format = DatasetFormat.ConversationalPromptCompletion;
            }
            catch (PeftSharpException ex) when (args.SkipMalformed && ex is not PreferenceDataException)
            {
                string prefix = r.Where + ": ";
                skipped.Add(new MalformedRecord(r.File, r.Line, ex.Message.StartsWith(prefix, StringComparison.Ordinal) ? ex.Message[prefix.Length..] : ex.Message));
                continue;
            }
            state.Examples++;
            yield return e;
        }
    }

    /// <summary>
    /// datasets' train_test_split: a permutation of the examples (here Fisher-Yates with Rng(seed));
    /// the first n_test are the test set, the rest (in permuted order) the train set. test_size below 1 is
    /// a fraction (n_test = ceil(fraction · n)), else a count.
    /// </summary>
    public static (List<T> Train, List<T> Test) TrainTestSplit<T>(IReadOnlyList<T> items, double testSize, int seed)
    {
        int n = items.Count;
        int nTest = testSize < 1 ? (int)Math.Ceiling(testSize * n) : (int)testSize;
        if (nTest <= 0 || nTest >= n)
            throw new PeftSharpException($"data.test_size {testSize} leaves {n - nTest} of {n} examples for training; use a smaller value or an eval_file.");
        var order = Enumerable.Range(0, n).ToArray();
        SftDataset.Shuffle(order, new Rng((ulong)(uint)seed));
        return (order[nTest..].Select(i => items[i]).ToList(), order[..nTest].Select(i => items[i]).ToList());
    }
}

/// <summary>Preference data given to SFT: never skipped as a malformed line.</summary>
internal sealed class PreferenceDataException(string message) : PeftSharpException(message);
