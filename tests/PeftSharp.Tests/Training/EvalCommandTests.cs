using PeftSharp.Cli.Commands;
using PeftSharp.Data;
using PeftSharp.Tests.Data;
using PeftSharp.Training;
using PeftSharp.Training.Sft;

namespace PeftSharp.Tests.Training;

public sealed class EvalCommandTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "peftsharp-eval-" + Guid.NewGuid().ToString("N"));

    public EvalCommandTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, true);

    private string Data()
    {
        string path = Path.Combine(_dir, "eval.jsonl");
        File.WriteAllText(path, "{\"prompt\": \"Q: sky?\\nA:\", \"completion\": \" it is blue today\"}\n{\"prompt\": \"Q: grass?\\nA:\", \"completion\": \" it is very green\"}\n");
        return path;
    }

    [Fact]
    public void LossMetricsMatchTheLibraryEvaluation()
    {
        string data = Data();
        var output = new StringWriter();
        var result = EvalCommand.Run(new EvalOptions("model-dir", data), _ => new TinyCausalLM(TinyTokenizer.Vocab, 21), null, _ => TinyTokenizer.Get(), output);
        var tok = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions());
        var examples = SftData.Convert(DataFiles.Read(data, "text", PlainTextMode.Lines, false, []), new DataArguments(), []).Examples;
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 21);
        var expected = LossEvaluation.Evaluate(model, SftData.Build(examples, tok, false, 1024), 8);
        Assert.Equal(expected.Loss, (double)result["eval_loss"]!, 12);
        Assert.Equal(Math.Exp(expected.Loss), (double)result["eval_perplexity"]!, 9);
        Assert.Equal(2, (int)result["examples"]!);
        Assert.Contains("\"eval_loss\"", output.ToString());
        Assert.False(result.ContainsKey("bleu"));
    }

    [Fact]
    public void AModelThatLearnedTheCompletionsScoresFullBleuAndRouge()
    {
        string data = Data();
        var model = new TinyCausalLM(TinyTokenizer.Vocab, 22);
        var tok = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions());
        var examples = SftData.Convert(DataFiles.Read(data, "text", PlainTextMode.Lines, false, []), new DataArguments(), []).Examples;
        var args = new TrainingArguments
        {
            OutputDir = Path.Combine(_dir, "train"), LearningRate = 3e-2, MaxSteps = 60, PerDeviceTrainBatchSize = 2, SaveStrategy = SaveStrategy.No,
            LoggingStrategy = IntervalStrategy.No, LrSchedulerType = "constant", MaxGradNorm = 1,
        };
        new SftTrainer(model, args, SftData.Build(examples, tok, false, 1024)).Train();
        var generation = PeftSharp.Training.Metrics.GenerationMetrics.Evaluate(model, TinyTokenizer.Get(), null, examples, 24);
        Assert.Equal([" it is blue today", " it is very green"], generation.Predictions);
        var result = EvalCommand.Run(new EvalOptions("m", data) { Metrics = ["loss", "bleu", "rougeL"], MaxNewTokens = 24 },
            _ => model, null, _ => TinyTokenizer.Get(), TextWriter.Null);
        Assert.Equal(100.0, (double)result["bleu"]!, 6);
        Assert.Equal(1.0, (double)result["rougeL"]!, 12);
        Assert.Equal(1.0, (double)result["eval_mean_token_accuracy"]!);
    }

    [Fact]
    public void ASplitKeyedJsonFileIsEvaluatedOnItsTestSplit()
    {
        string data = Path.Combine(_dir, "splits.json");
        File.WriteAllText(data, """
            {"train": [{"text": "the cat sat on the mat"}, {"text": "hello world"}, {"text": "a quick brown fox"}],
             "test": [{"text": "we all like tea"}]}
            """);
        System.Text.Json.Nodes.JsonObject Eval(EvalOptions options) => EvalCommand.Run(options,
            _ => new TinyCausalLM(TinyTokenizer.Vocab, 21), null, _ => TinyTokenizer.Get(), TextWriter.Null);
        Assert.Equal(1, (int)Eval(new EvalOptions("m", data))["examples"]!); // the default split is test
        Assert.Equal(3, (int)Eval(new EvalOptions("m", data) { Split = "train" })["examples"]!);
    }

    [Fact]
    public void BadArgumentsAreUserErrors()
    {
        string data = Data();
        Assert.Contains("unknown metric 'bert'", Assert.Throws<PeftSharpException>(() =>
            EvalCommand.Run(new EvalOptions("m", data) { Metrics = ["bert"] }, _ => throw new InvalidOperationException(), null, _ => TinyTokenizer.Get(), TextWriter.Null)).Message);
        string text = Path.Combine(_dir, "t.txt");
        File.WriteAllText(text, "just text\n");
        Assert.Contains("need prompt-completion or conversational data", Assert.Throws<PeftSharpException>(() =>
            EvalCommand.Run(new EvalOptions("m", text) { Metrics = ["bleu"] }, _ => new TinyCausalLM(TinyTokenizer.Vocab, 1), null, _ => TinyTokenizer.Get(), TextWriter.Null)).Message);
        Assert.Contains("adapter", Assert.Throws<PeftSharpException>(() =>
            EvalCommand.Run(new EvalOptions("m", data) { Adapter = "a" }, _ => new TinyCausalLM(TinyTokenizer.Vocab, 1), PeftSharp.Cli.ModelLoading.ApplyAdapter, _ => TinyTokenizer.Get(), TextWriter.Null)).Message);
    }
}
