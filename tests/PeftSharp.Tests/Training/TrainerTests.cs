using System.Text.Json.Nodes;
using PeftSharp.Autograd;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Tests.Data;
using PeftSharp.Training;
using PeftSharp.Training.Sft;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Training;

public sealed class TrainerTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "peftsharp-trainer-" + Guid.NewGuid().ToString("N"));

    public TrainerTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, true);

    internal static readonly string[] Sentences =
    [
        "the cat sat on the mat", "hello world", "a quick brown fox", "we all like tea", "the sun is hot",
        "rain falls down", "tell me a story", "it was all well", "dogs bark at night", "the end",
    ];

    internal static SftDataset Dataset(int count = 10, bool packing = false, int maxLength = 32)
    {
        var tok = new SftTokenization(TinyTokenizer.Get(), null, new SftTokenizationOptions { MaxLength = maxLength });
        var examples = Sentences.Take(count).Select(s => tok.TokenizeFull(SftExample.FromText(s))).ToList();
        return packing ? SftDataset.Pack(examples, tok.PadId, maxLength) : SftDataset.FromExamples(examples, tok.PadId);
    }

    private TrainingArguments Args(string name, Action<TrainingArguments>? change = null)
    {
        var a = new TrainingArguments
        {
            OutputDir = Path.Combine(_dir, name), LearningRate = 1e-2, NumTrainEpochs = 2, PerDeviceTrainBatchSize = 2,
            GradientAccumulationSteps = 2, LoggingSteps = 1, SaveStrategy = SaveStrategy.No, Seed = 5, WarmupSteps = 1,
        };
        change?.Invoke(a);
        return a;
    }

    private static byte[] Bytes(ICausalLM model) =>
        model.Parameters.Where(p => p.RequiresGrad).SelectMany(p => System.Runtime.InteropServices.MemoryMarshal.AsBytes(p.AsSpan()).ToArray()).ToArray();

    private sealed class StopAt(int step) : ITrainerCallback
    {
        public void OnStep(TrainingProgress p, TrainerControl control) { if (p.Step == step) control.ShouldStop = true; }
    }

    private sealed class Recorder : ITrainerCallback
    {
        public List<TrainingProgress> Steps { get; } = [];
        public List<JsonObject> Logs { get; } = [];
        public void OnStep(TrainingProgress p, TrainerControl control) => Steps.Add(p);
        public void OnLog(JsonObject e) => Logs.Add(e);
    }

    [Fact]
    public void TrainingLowersTheLossAndReportsProgress()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 1);
        var rec = new Recorder();
        var args = Args("learn", a => { a.NumTrainEpochs = 6; a.LearningRate = 3e-2; a.LrSchedulerType = "constant_with_warmup"; });
        var data = Dataset();
        double before = LossEvaluation.Evaluate(model, data, 4).Loss;
        var result = new SftTrainer(model, args, data, callbacks: [rec]).Train();
        double after = LossEvaluation.Evaluate(model, data, 4).Loss;
        Assert.Equal(18, result.GlobalStep); // 10 rows / 2 per micro-batch = 5 micro-batches → 3 steps per epoch
        Assert.True(after < 0.5 * before, $"loss {before} → {after}");
        Assert.Equal(Enumerable.Range(1, 18), rec.Steps.Select(s => s.Step));
        Assert.All(rec.Steps, s => Assert.Equal(18, s.TotalSteps));
        Assert.Equal(1.0 / 3, rec.Steps[0].Epoch, 12);
        Assert.Equal(0.0, rec.Steps[0].LearningRate); // one warmup step: factor 0 at step 0
        Assert.Equal(3e-2, rec.Steps[1].LearningRate, 12);
        var lines = File.ReadAllLines(Path.Combine(args.OutputDir, SftTrainer.MetricsFileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        Assert.Equal(19, lines.Count); // 18 step logs and the summary
        Assert.Equal(result.StepLosses[4], (double)lines[4]["loss"]!, 5);
        Assert.True((double)lines[4]["grad_norm"]! > 0);
        Assert.True(lines[^1].ContainsKey("train_loss"));
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(args.OutputDir, TrainerState.FileName)))!.AsObject();
        Assert.Equal(18, (int)state["global_step"]!);
        Assert.Equal(19, state["log_history"]!.AsArray().Count);
    }

    [Fact]
    public void AccumulationGivesTheTokenMeanGradientOfTheEffectiveBatch()
    {
        // 4 rows in one micro-batch vs 2 micro-batches of 2: the same gradient (token-weighted), so SGD lands on the same weights.
        using var one = new TinyCausalLM(TinyTokenizer.Vocab, 2);
        using var two = new TinyCausalLM(TinyTokenizer.Vocab, 2);
        var data = Dataset(8);
        void Common(TrainingArguments a) { a.Optim = "sgd"; a.MaxGradNorm = 0; a.WarmupSteps = 0; a.LrSchedulerType = "constant"; a.NumTrainEpochs = 1; }
        var r1 = new SftTrainer(one, Args("one", a => { Common(a); a.PerDeviceTrainBatchSize = 4; a.GradientAccumulationSteps = 1; }), data).Train();
        var r2 = new SftTrainer(two, Args("two", a => { Common(a); a.PerDeviceTrainBatchSize = 2; a.GradientAccumulationSteps = 2; }), data).Train();
        Assert.Equal(2, r1.GlobalStep);
        Assert.Equal(2, r2.GlobalStep);
        for (int i = 0; i < 2; i++) Assert.Equal(r1.StepLosses[i], r2.StepLosses[i], 5);
        var p1 = one.Parameters.SelectMany(p => p.AsSpan().ToArray()).ToArray();
        var p2 = two.Parameters.SelectMany(p => p.AsSpan().ToArray()).ToArray();
        Assert.True(p1.Zip(p2, (a, b) => Math.Abs(a - b)).Max() < 1e-5);
        // And with unweighted micro-batch means the result would differ measurably: the micro-batches hold different token counts.
        var b1 = data.Collate(data.EpochOrder(5, 0, true).AsSpan(0, 2));
        var b2 = data.Collate(data.EpochOrder(5, 0, true).AsSpan(2, 2));
        Assert.NotEqual(SftDataset.TargetCount(b1), SftDataset.TargetCount(b2));
    }

    [Fact]
    public void StrategiesLogEvaluateAndSaveAtTheirSteps()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 3);
        var args = Args("strategies", a =>
        {
            a.NumTrainEpochs = 3; a.GradientAccumulationSteps = 1; a.LoggingSteps = 4; a.EvalStrategy = IntervalStrategy.Steps; a.EvalSteps = 5;
            a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 5; a.SaveTotalLimit = 2;
        });
        var result = new SftTrainer(model, args, Dataset(8), Dataset(4)).Train();
        Assert.Equal(12, result.GlobalStep);
        var lines = File.ReadAllLines(Path.Combine(args.OutputDir, SftTrainer.MetricsFileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        Assert.Equal([4, 8, 12], lines.Where(l => l.ContainsKey("loss")).Select(l => (int)l["step"]!));
        var evals = lines.Where(l => l.ContainsKey("eval_loss")).ToList();
        Assert.Equal([5, 10], evals.Select(l => (int)l["step"]!));
        Assert.Equal(Math.Exp((double)evals[0]["eval_loss"]!), (double)evals[0]["eval_perplexity"]!, 9);
        Assert.InRange((double)evals[0]["eval_mean_token_accuracy"]!, 0, 1);
        // Saved at 5, 10 and at the end (12); the limit of 2 removed checkpoint-5 unless it is the best.
        var kept = SftTrainer.Checkpoints(args.OutputDir).Select(c => c.Step).ToList();
        Assert.Contains(12, kept);
        Assert.Contains(result.State.BestGlobalStep!.Value, kept);
        Assert.Equal(2, kept.Count);
        Assert.Empty(Directory.GetDirectories(args.OutputDir, ".checkpoint-*"));
        foreach (var f in new[] { "trainable.safetensors", "optimizer.safetensors", "scheduler.json", "rng_state.json", "trainer_state.json" })
            Assert.True(File.Exists(Path.Combine(args.OutputDir, "checkpoint-12", f)), f);
    }

    [Fact]
    public void BestCheckpointIsKeptAndLoadedAtTheEnd()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 4);
        // greater_is_better on eval_loss makes the first (worst) evaluation the best one.
        var args = Args("best", a =>
        {
            a.NumTrainEpochs = 2; a.GradientAccumulationSteps = 1; a.LearningRate = 3e-2; a.EvalStrategy = IntervalStrategy.Steps; a.EvalSteps = 2;
            a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 2; a.SaveTotalLimit = 1; a.LoadBestModelAtEnd = true; a.GreaterIsBetter = true;
        });
        var result = new SftTrainer(model, args, Dataset(8), Dataset(4)).Train();
        Assert.Equal(Path.Combine(args.OutputDir, "checkpoint-2"), result.BestModelCheckpoint);
        Assert.Equal([2, 8], SftTrainer.Checkpoints(args.OutputDir).Select(c => c.Step));
        using var fromBest = new TinyCausalLM(TinyTokenizer.Vocab, 99);
        new ParameterTrainableState(fromBest.Parameters).Load(result.BestModelCheckpoint!);
        Assert.Equal(Bytes(fromBest), Bytes(model));
    }

    [Fact]
    public void EarlyStoppingStopsAfterPatienceEvaluationsWithoutImprovement()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 5);
        var args = Args("early", a =>
        {
            a.NumTrainEpochs = 5; a.GradientAccumulationSteps = 1; a.EvalStrategy = IntervalStrategy.Steps; a.EvalSteps = 1;
            a.EarlyStoppingPatience = 2; a.EarlyStoppingThreshold = 100; // nothing improves by more than 100
        });
        var result = new SftTrainer(model, args, Dataset(8), Dataset(4)).Train();
        Assert.True(result.StoppedEarly);
        Assert.Equal(3, result.GlobalStep);
        Assert.Equal(2, result.State.EarlyStoppingPatienceCounter);
    }

    internal sealed class NaNAfter(ICausalLM inner, int goodCalls) : ICausalLM
    {
        private int _calls;
        public PeftSharp.Formats.HfConfig.ModelConfig Config => inner.Config;
        public IReadOnlyList<LinearSlot> Linears => inner.Linears;
        public IEnumerable<Parameter> Parameters => inner.Parameters;
        public Tensor Forward(Ops ops, TokenBatch batch) => inner.Forward(ops, batch);
        public Tensor Loss(Ops ops, TokenBatch batch) => ++_calls > goodCalls ? ops.Scale(inner.Loss(ops, batch), float.NaN) : inner.Loss(ops, batch);
        public IDecodeSession StartDecoding(int batch, int maxTokens) => inner.StartDecoding(batch, maxTokens);
        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public void NaNLossStopsNamingTheStepAndLeavesTheLastCheckpointIntact()
    {
        using var model = new NaNAfter(new TinyCausalLM(TinyTokenizer.Vocab, 6), goodCalls: 6);
        var args = Args("nan", a => { a.GradientAccumulationSteps = 1; a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 3; });
        var before = Bytes(model);
        var e = Assert.Throws<PeftSharpException>(() => new SftTrainer(model, args, Dataset(8)).Train());
        Assert.Contains("step 7", e.Message);
        Assert.Contains("NaN", e.Message);
        Assert.Contains("checkpoint-6", e.Message);
        var saved = File.ReadAllBytes(Path.Combine(args.OutputDir, "checkpoint-6", "trainable.safetensors"));
        using var check = new TinyCausalLM(TinyTokenizer.Vocab, 0);
        new ParameterTrainableState(check.Parameters).Load(Path.Combine(args.OutputDir, "checkpoint-6"));
        Assert.Equal(Bytes(model), Bytes(check)); // the failed step changed nothing
        Assert.NotEqual(before, Bytes(check));
        Assert.True(saved.Length > 0);
    }

    [Theory]
    [InlineData("adamw_torch", false)]
    [InlineData("adamw_8bit", true)]
    public void ResumedRunMatchesTheUninterruptedRunExactly(string optim, bool packing)
    {
        void Change(TrainingArguments a)
        {
            a.Optim = optim; a.NumTrainEpochs = 3; a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 4; a.LrSchedulerType = "cosine";
            a.LoggingSteps = 3; a.WeightDecay = 0.01;
            if (packing) { a.PerDeviceTrainBatchSize = 1; a.GradientAccumulationSteps = 1; }
        }
        var data = Dataset(10, packing, maxLength: 32);
        Assert.Equal(packing, data.Rows.Any(r => r.SegmentIds.Any(s => s > 0)));
        using var full = new TinyCausalLM(TinyTokenizer.Vocab, 7);
        var argsFull = Args("full-" + optim, Change);
        var reference = new SftTrainer(full, argsFull, data).Train();

        using var interrupted = new TinyCausalLM(TinyTokenizer.Vocab, 7);
        var argsPart = Args("part-" + optim, Change);
        var part = new SftTrainer(interrupted, argsPart, data, callbacks: [new StopAt(6)]).Train();
        Assert.Equal(6, part.GlobalStep);
        Assert.Equal(reference.StepLosses.Take(6), part.StepLosses);

        using var resumed = new TinyCausalLM(TinyTokenizer.Vocab, 7);
        var argsResume = Args("part-" + optim, a => { Change(a); a.ResumeFromCheckpoint = "true"; });
        var rest = new SftTrainer(resumed, argsResume, data).Train();
        Assert.Equal(reference.GlobalStep, rest.GlobalStep);
        Assert.Equal(reference.StepLosses.Skip(4), rest.StepLosses); // resumed from checkpoint-4
        Assert.Equal(Path.Combine(argsResume.OutputDir, "checkpoint-4"), rest.ResumedFrom);
        Assert.Null(reference.ResumedFrom);
        Assert.Equal(Bytes(full), Bytes(resumed));
        Assert.Equal(File.ReadAllBytes(Path.Combine(argsFull.OutputDir, $"checkpoint-{reference.GlobalStep}", "trainable.safetensors")),
            File.ReadAllBytes(Path.Combine(argsResume.OutputDir, $"checkpoint-{rest.GlobalStep}", "trainable.safetensors")));
        string Losses(string dir) => string.Join("\n", File.ReadAllLines(Path.Combine(dir, SftTrainer.MetricsFileName))
            .Select(l => JsonNode.Parse(l)!.AsObject()).Where(o => o.ContainsKey("loss")).Select(o => $"{o["step"]} {o["loss"]} {o["learning_rate"]}"));
        Assert.Equal(Losses(argsFull.OutputDir), Losses(argsResume.OutputDir));
    }

    [Fact]
    public void SameConfigAndSeedGiveByteIdenticalResults()
    {
        byte[] Run(string name, out IReadOnlyList<double> losses)
        {
            using var model = new TinyCausalLM(TinyTokenizer.Vocab, 8);
            var r = new SftTrainer(model, Args(name), Dataset(10, packing: true)).Train();
            losses = r.StepLosses;
            return Bytes(model);
        }
        var a = Run("det-a", out var la);
        var b = Run("det-b", out var lb);
        Assert.Equal(la, lb);
        Assert.Equal(a, b);
        using var other = new TinyCausalLM(TinyTokenizer.Vocab, 8);
        new SftTrainer(other, Args("det-c", x => x.Seed = 6), Dataset(10, packing: true)).Train();
        Assert.NotEqual(a, Bytes(other));
    }

    [Fact]
    public void ResumeWithOtherDataIsAUserError()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 10);
        var args = Args("otherdata", a => { a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 2; a.MaxSteps = 2; });
        new SftTrainer(model, args, Dataset(8)).Train();
        args.ResumeFromCheckpoint = "true";
        var e = Assert.Throws<PeftSharpException>(() => new SftTrainer(model, args, Dataset(6)).Train());
        Assert.Contains("trained on 8 rows, this run has 6", e.Message);
    }

    [Fact]
    public void ResumeWithoutCheckpointsIsAUserError()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 9);
        var e = Assert.Throws<PeftSharpException>(() => new SftTrainer(model, Args("none", a => a.ResumeFromCheckpoint = "true"), Dataset(4)).Train());
        Assert.Contains("no checkpoint-N folder", e.Message);
    }
}
