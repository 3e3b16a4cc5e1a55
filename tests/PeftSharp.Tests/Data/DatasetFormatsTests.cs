using Apache.Arrow;
using Apache.Arrow.Ipc;
using Apache.Arrow.Types;
using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Training;
using static PeftSharp.Tests.Data.DatasetSourcesTests;

namespace PeftSharp.Tests.Data;

/// <summary>TRL's data formats from Parquet (written by DuckDB), JSONL and save_to_disk Arrow folders.</summary>
public sealed class DatasetFormatsTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-formats").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private static List<SftExample> Sft(string file, out DatasetFormat format)
    {
        var (f, examples) = SftData.Convert(DataFiles.Read(file, "text", PlainTextMode.Lines, false, []), new DataArguments(), []);
        format = f;
        return examples;
    }

    [Fact]
    public void ShareGptFromParquetAndJsonlMapsRoles()
    {
        string jsonl = Path.Combine(_root, "sharegpt.jsonl");
        File.WriteAllText(jsonl, """{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi 0"}, {"from": "gpt", "value": "Hello 0"}]}""" + "\n");
        foreach (var file in new[] { Golden("formats", "sharegpt.parquet"), jsonl })
        {
            var examples = Sft(file, out var format);
            Assert.Equal(DatasetFormat.Conversational, format);
            Assert.Equal(["system: Be brief.", "user: Hi 0", "assistant: Hello 0"], examples[0].Messages!.Select(m => m.ToString()));
        }
        string bad = Path.Combine(_root, "bad.jsonl");
        File.WriteAllText(bad, """{"conversations": [{"from": "narrator", "value": "x"}]}""" + "\n");
        var e = Assert.Throws<PeftSharpException>(() => Sft(bad, out _));
        Assert.Contains("bad.jsonl:1: conversations[0].from is \"narrator\"; ShareGPT roles are", e.Message);
    }

    [Fact]
    public void ContentPartsAreJoinedAndToolsReachTheTemplate()
    {
        var examples = Sft(Golden("formats", "content_parts.parquet"), out _);
        Assert.Equal("Part A1 part B", examples[1].Messages![0].Content);
        Assert.Equal("Reply 1", examples[1].Messages![1].Content);
        Assert.Equal("get_time", examples[1].Tools!.Value[0].GetProperty("function").GetProperty("name").GetString());

        var template = ChatTemplate.Parse("{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}");
        var tokenization = new SftTokenization(TinyTokenizer.Get(), template, new SftTokenizationOptions());
        var ids = tokenization.TokenizeFull(examples[1]).InputIds;
        Assert.Equal("[get_time]<user>Part A1 part B<assistant>Reply 1", TinyTokenizer.Get().Decode(ids));

        string image = Path.Combine(_root, "image.jsonl");
        File.WriteAllText(image, """{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]}""" + "\n");
        var e = Assert.Throws<PeftSharpException>(() => Sft(image, out _));
        Assert.Contains("image.jsonl:1: messages[0].content[0] is a \"image\" part; PeftSharp trains text-only models", e.Message);
    }

    [Fact]
    public void PreferenceDataLoadsForThePreferenceTrainersAndIsRefusedForSft()
    {
        // The preference trainers read every file type DataFiles reads (PreferenceData), Parquet included.
        var paired = ColumnarFiles.ReadParquet(Golden("formats", "preference.parquet")).Select(r => PreferenceData.Convert(r, null)).ToList();
        Assert.Equal(4, paired.Count);
        Assert.Equal(("Is 1 even?", "No.", "Yes."), (paired[1].Prompt, paired[1].Chosen, paired[1].Rejected));

        var chatml = PeftSharp.Formats.ChatTemplates.ChatTemplate.Builtin("chatml");
        var implicitPrompt = ColumnarFiles.ReadParquet(Golden("formats", "preference_implicit_conversational.parquet"))
            .Select(r => PreferenceData.Convert(r, chatml)).ToList();
        Assert.Contains("Good 1", implicitPrompt[1].Chosen);
        Assert.Contains("Bad 1", implicitPrompt[1].Rejected);
        Assert.DoesNotContain("Good 1", implicitPrompt[1].Prompt);
        Assert.EndsWith("<|im_start|>assistant\n", implicitPrompt[1].Prompt); // the shared turns, with the generation prompt

        var unpaired = ColumnarFiles.ReadParquet(Golden("formats", "unpaired_preference.parquet")).Select(r => PreferenceData.Convert(r, null)).ToList();
        Assert.Equal([true, false, true, false], unpaired.Select(u => u.Label));
        Assert.Equal("Answer 3", unpaired[3].Completion);

        foreach (var name in new[] { "preference.parquet", "preference_implicit_conversational.parquet", "unpaired_preference.parquet" })
        {
            // Refused even with skip_malformed: preference data is not a malformed line.
            var e = Assert.ThrowsAny<PeftSharpException>(() => SftData.Convert(
                ColumnarFiles.ReadParquet(Golden("formats", name)).ToList(), new DataArguments { SkipMalformed = true }, []));
            Assert.Contains(name + ": ", e.Message);
            Assert.Contains("trains a preference model (DPO, ORPO, KTO, a reward model), not SFT", e.Message);
        }
    }

    [Fact]
    public void UnusedColumnsAreNamedInANotice()
    {
        var args = new DataArguments { TrainFile = Golden("formats", "text_nested_columns.parquet") };
        var bundle = SftData.Load(args, TinyTokenizer.Get(), null, seed: 1);
        Assert.Equal(DatasetFormat.Text, bundle.Format);
        Assert.Contains("columns not used by language-modelling data: tags, meta.", bundle.Notices);
        Assert.Equal(3, bundle.TrainStats!.Examples);
    }

    [Fact]
    public void ReadsSaveToDiskDatasetDictFolders()
    {
        string folder = Path.Combine(_root, "saved");
        WriteSplit(Path.Combine(folder, "train"), 0, 5, batches: 2);
        WriteSplit(Path.Combine(folder, "test"), 100, 2, batches: 1);
        File.WriteAllText(Path.Combine(folder, "dataset_dict.json"), """{"splits": ["train", "test"]}""");
        var d = DatasetSources.Resolve(folder, null);
        Assert.Equal(["train", "test"], d.SplitNames);
        var train = d.Splits["train"].SelectMany(ColumnarFiles.ReadArrow).ToList();
        Assert.Equal(5, train.Count);
        Assert.Contains("(row 4: record batch 1, row 1)", train[4].Where);
        var (format, examples) = SftData.Convert(train, new DataArguments(), []);
        Assert.Equal(DatasetFormat.Conversational, format);
        Assert.Equal("Answer 4", examples[4].Messages![1].Content);
        var test = SftData.Convert(d.Splits["test"].SelectMany(ColumnarFiles.ReadArrow).ToList(), new DataArguments(), []).Examples;
        Assert.Equal("Question 101", test[1].Messages![0].Content);

        File.Delete(Path.Combine(folder, "test", "data-00000-of-00001.arrow"));
        var e = Assert.Throws<PeftSharpException>(() => DatasetSources.Resolve(folder, null));
        Assert.Contains("_data_files[0] names data-00000-of-00001.arrow, which is missing", e.Message);
    }

    /// <summary>A save_to_disk split: an Arrow IPC stream of messages list&lt;struct&lt;role, content&gt;&gt;, state.json and dataset_info.json.</summary>
    private static void WriteSplit(string folder, int first, int count, int batches)
    {
        Directory.CreateDirectory(folder);
        var messageType = new StructType([new Field("role", StringType.Default, true), new Field("content", StringType.Default, true)]);
        var schema = new Schema([new Field("messages", new ListType(new Field("item", messageType, true)), true)], null);
        string file = Path.Combine(folder, "data-00000-of-00001.arrow");
        using (var stream = File.Create(file))
        using (var writer = new ArrowStreamWriter(stream, schema))
        {
            int per = (count + batches - 1) / batches;
            for (int start = 0; start < count; start += per)
            {
                int n = Math.Min(per, count - start);
                var roles = new StringArray.Builder();
                var contents = new StringArray.Builder();
                var offsets = new ArrowBuffer.Builder<int>();
                offsets.Append(0);
                for (int i = 0; i < n; i++)
                {
                    int k = first + start + i;
                    roles.Append("user").Append("assistant");
                    contents.Append($"Question {k}").Append($"Answer {k}");
                    offsets.Append(2 * (i + 1));
                }
                var structs = new StructArray(messageType, 2 * n, [roles.Build(), contents.Build()], ArrowBuffer.Empty);
                var lists = new ListArray(schema.FieldsList[0].DataType, n, offsets.Build(), structs, ArrowBuffer.Empty);
                writer.WriteRecordBatch(new RecordBatch(schema, [lists], n));
            }
            writer.WriteEnd();
        }
        File.WriteAllText(Path.Combine(folder, "state.json"), """{"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": null}""");
        File.WriteAllText(Path.Combine(folder, "dataset_info.json"), "{}");
    }
}
