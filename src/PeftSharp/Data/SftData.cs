using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Tensors;
using PeftSharp.Training;

namespace PeftSharp.Data;

/// <summary>The loaded train and eval sets, and what the loader has to tell the user (skipped lines, the format found).</summary>
public sealed record SftDataBundle(SftDataset Train, SftDataset? Eval, DatasetFormat Format, IReadOnlyList<string> Notices,
    IReadOnlyList<MalformedRecord> Skipped)
{
    /// <summary>The evaluation examples before tokenization (for generation metrics and samples).</summary>
    public IReadOnlyList<SftExample> EvalExamples { get; init; } = [];
}

/// <summary>From the `data` section to datasets: read, detect the format, split, tokenize, pack.</summary>
public static class SftData
{
    /// <param name="seed">The split seed (training's data_seed, else seed).</param>
    public static SftDataBundle Load(DataArguments args, Tokenizer tokenizer, ChatTemplate? chatTemplate, int seed)
    {
        if (string.IsNullOrEmpty(args.TrainFile)) throw new PeftSharpException("data.train_file is not set.");
        var skipped = new List<MalformedRecord>();
        var notices = new List<string>();
        var mode = args.TextFileMode == "whole" ? PlainTextMode.Whole : PlainTextMode.Lines;
        var trainRecords = DataFiles.Read(args.TrainFile, args.DatasetTextField, mode, args.SkipMalformed, skipped);
        var (format, train) = Convert(trainRecords, args, skipped);
        if (train.Count == 0) throw new PeftSharpException($"{args.TrainFile}: no training examples.");
        List<SftExample>? eval = null;
        if (!string.IsNullOrEmpty(args.EvalFile))
        {
            var evalRecords = DataFiles.Read(args.EvalFile, args.DatasetTextField, mode, args.SkipMalformed, skipped);
            eval = Convert(evalRecords, args, skipped, format).Examples;
        }
        else if (args.TestSize is double testSize)
        {
            var (trainPart, testPart) = TrainTestSplit(train, testSize, seed);
            train = trainPart;
            eval = testPart;
        }
        if (skipped.Count > 0)
            notices.Add($"skipped {skipped.Count} malformed line(s); first: {skipped[0]}");
        var tokenization = new SftTokenization(tokenizer, chatTemplate, new SftTokenizationOptions
        {
            MaxLength = args.MaxLength,
            CompletionOnlyLoss = args.CompletionOnlyLoss,
            AssistantOnlyLoss = args.AssistantOnlyLoss,
            ChunkLongText = mode == PlainTextMode.Whole,
        });
        var trainSet = Build(train, tokenization, args.Packing, args.MaxLength);
        var evalSet = eval == null ? null : Build(eval, tokenization, packing: false, args.MaxLength);
        return new SftDataBundle(trainSet, evalSet, format, notices, skipped) { EvalExamples = eval ?? [] };
    }

    /// <summary>
    /// The chat template data.chat_template names: a built-in format (chatml, llama3, llama2, zephyr), a Jinja
    /// source (it contains "{{" or "{%"), else the model folder's tokenizer_config.json template; null when
    /// neither is given.
    /// </summary>
    public static ChatTemplate? ResolveChatTemplate(string? chatTemplate, string? modelFolder) => Models.Generation.ChatTemplates.Resolve(chatTemplate, modelFolder);

    public static SftDataset Build(IReadOnlyList<SftExample> examples, SftTokenization tokenization, bool packing, int maxLength)
    {
        var tokenized = examples.SelectMany(tokenization.Tokenize).Where(e => e.Length > 0).ToList();
        return packing ? SftDataset.Pack(tokenized, tokenization.PadId, maxLength) : SftDataset.FromExamples(tokenized, tokenization.PadId);
    }

    /// <summary>Detects (or takes) the format from the first record and converts every record, skipping or throwing on bad ones.</summary>
    public static (DatasetFormat Format, List<SftExample> Examples) Convert(IReadOnlyList<DataRecord> records, DataArguments args,
        List<MalformedRecord> skipped, DatasetFormat? known = null)
    {
        DatasetFormat? format = known ?? (args.Format == "auto" ? null : SftExamples.ParseFormat(args.Format));
        var examples = new List<SftExample>(records.Count);
        foreach (var r in records)
        {
            try
            {
                format ??= SftExamples.Detect(r.Fields, args.DatasetTextField, r.Where);
                var e = SftExamples.Convert(r, format.Value, args.DatasetTextField);
                if (format == DatasetFormat.PromptCompletion && e.Format == DatasetFormat.ConversationalPromptCompletion)
                    format = DatasetFormat.ConversationalPromptCompletion;
                examples.Add(e);
            }
            catch (PeftSharpException e) when (args.SkipMalformed)
            {
                string prefix = r.Where + ": ";
                skipped.Add(new MalformedRecord(r.File, r.Line, e.Message.StartsWith(prefix, StringComparison.Ordinal) ? e.Message[prefix.Length..] : e.Message));
            }
        }
        return (format ?? DatasetFormat.Text, examples);
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
