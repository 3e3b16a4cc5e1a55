using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Models;
using PeftSharp.Reporting;
using PeftSharp.Tests.Data;
using PeftSharp.Training;
using PeftSharp.Training.Optimizers;
using PeftSharp.Training.Sft;

namespace PeftSharp.Tests.Training;

/// <summary>The shared loop's transformers options, logs, saves and failure modes.</summary>
public sealed class TrainerCoreTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-core").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private TrainingArguments Args(string name, Action<TrainingArguments>? change = null)
    {
        var a = new TrainingArguments
        {
            OutputDir = Path.Combine(_dir, name), LearningRate = 1e-2, MaxSteps = 8, PerDeviceTrainBatchSize = 2,
            GradientAccumulationSteps = 1, LoggingSteps = 1, SaveStrategy = SaveStrategy.No, Seed = 5,
        };
        change?.Invoke(a);
        a.Validate();
        return a;
    }

    private static List<JsonObject> Log(string dir) =>
        File.ReadAllLines(Path.Combine(dir, SftTrainer.MetricsFileName)).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();

    private static SftDataset Data(int n = 8) => TrainerTests.Dataset(n);

    [Fact]
    public void FractionalStepsAreSharesOfTheTotal()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 1);
        var args = Args("fraction", a =>
        {
            a.LoggingSteps = 0.25; a.EvalStrategy = IntervalStrategy.Steps; a.EvalSteps = 0.5; a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 0.3;
        });
        new SftTrainer(model, args, Data(), Data(4)).Train();
        var log = Log(args.OutputDir);
        Assert.Equal([2, 4, 6, 8], log.Where(l => l.ContainsKey("loss")).Select(l => (int)l["step"]!));
        Assert.Equal([4, 8], log.Where(l => l.ContainsKey("eval_loss")).Select(l => (int)l["step"]!));
        Assert.Equal([3, 6, 8], SftTrainer.Checkpoints(args.OutputDir).Select(c => c.Step)); // ceil(0.3·8) = 3, and the last step
    }

    [Fact]
    public void EvalOnStartScoresTheModelBeforeTheFirstStep()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 2);
        var args = Args("start", a => { a.EvalOnStart = true; a.EvalStrategy = IntervalStrategy.Steps; a.EvalSteps = 4; });
        var before = LossEvaluation.Evaluate(model, Data(4), 8);
        new SftTrainer(model, args, Data(), Data(4)).Train();
        var first = Log(args.OutputDir)[0];
        Assert.Equal(0, (int)first["step"]!);
        Assert.Equal(before.Loss, (double)first["eval_loss"]!, 12);
    }

    [Fact]
    public void SaveStrategyBestSavesExactlyWhenTheMetricImproves()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 3);
        var args = Args("best", a =>
        {
            a.LearningRate = 0.3; a.EvalStrategy = IntervalStrategy.Steps; a.EvalSteps = 1; a.SaveStrategy = SaveStrategy.Best;
            a.MetricForBestModel = "mean_token_accuracy";
        });
        var result = new SftTrainer(model, args, Data(), Data(4)).Train();
        var evals = Log(args.OutputDir).Where(l => l.ContainsKey("eval_mean_token_accuracy")).ToList();
        var improved = new List<int>();
        double best = double.NegativeInfinity;
        foreach (var e in evals)
        {
            double v = (double)e["eval_mean_token_accuracy"]!;
            if (v > best) { best = v; improved.Add((int)e["step"]!); }
        }
        Assert.Equal(improved, SftTrainer.Checkpoints(args.OutputDir).Select(c => c.Step));
        Assert.True(improved.Count < evals.Count, "the learning rate should make some evaluations worse");
        Assert.Equal(Path.Combine(args.OutputDir, $"checkpoint-{improved[^1]}"), result.BestModelCheckpoint);
    }

    [Fact]
    public void AnUnknownBestMetricIsRefusedBeforeTraining()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 4);
        var args = Args("metric", a => { a.EvalStrategy = IntervalStrategy.Epoch; a.MetricForBestModel = "blue"; });
        var e = Assert.Throws<PeftSharpException>(() => new SftTrainer(model, args, Data(), Data(4)));
        Assert.Contains("\"blue\"", e.Message);
        Assert.Contains("mean_token_accuracy", e.Message);
        Assert.False(Directory.Exists(args.OutputDir));
    }

    [Fact]
    public void TensorBoardEventFilesHoldEveryLoggedNumber()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 5);
        var args = Args("tb", a => { a.ReportTo = ["tensorboard"]; a.EvalStrategy = IntervalStrategy.Steps; a.EvalSteps = 4; a.LoggingSteps = 2; });
        new SftTrainer(model, args, Data(), Data(4)).Train();
        var file = Assert.Single(Directory.GetFiles(Path.Combine(args.OutputDir, "runs"), "events.out.tfevents.*"));
        var events = TfEvents.Read(file);
        Assert.Equal("brain.Event:2", events[0].FileVersion);
        var scalars = events.SelectMany(e => e.Values.Select(v => (e.Step, v.Tag, v.Value))).ToList();
        foreach (var entry in Log(args.OutputDir).Where(l => l.ContainsKey("loss") || l.ContainsKey("eval_loss")))
        {
            long step = (long)entry["step"]!;
            foreach (var (key, node) in entry)
            {
                if (key == "step") continue;
                string tag = key.StartsWith("eval_") ? "eval/" + key[5..] : "train/" + key;
                float expected = (float)PeftSharp.Config.KeySpec.AsNumber(node)!.Value;
                Assert.True(scalars.Any(s => s.Step == step && s.Tag == tag && s.Value == expected), $"{tag} = {expected} at step {step}");
            }
        }
        Assert.Contains(scalars, s => s.Tag == "eval/loss" && s.Step == 8);
    }

    [Fact]
    public void AFailedRunLeavesThePreviousRunsStateFiles()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 6);
        var args = Args("failed");
        new SftTrainer(model, args, Data()).Train();
        var metrics = File.ReadAllBytes(Path.Combine(args.OutputDir, SftTrainer.MetricsFileName));
        var state = File.ReadAllBytes(Path.Combine(args.OutputDir, TrainerState.FileName));
        using var failing = new TrainerTests.NaNAfter(model, goodCalls: 3);
        Assert.Throws<PeftSharpException>(() => new SftTrainer(failing, args, Data()).Train());
        Assert.Equal(metrics, File.ReadAllBytes(Path.Combine(args.OutputDir, SftTrainer.MetricsFileName)));
        Assert.Equal(state, File.ReadAllBytes(Path.Combine(args.OutputDir, TrainerState.FileName)));
        Assert.True(File.Exists(Path.Combine(args.OutputDir, "metrics.live.jsonl")));
        Assert.False(File.Exists(Path.Combine(args.OutputDir, OutputLock.FileName))); // the lock goes with the run
    }

    [Fact]
    public void TheOutputFolderIsLockedForTheRun()
    {
        string dir = Path.Combine(_dir, "locked");
        Directory.CreateDirectory(dir);
        using (var held = OutputLock.Acquire(dir))
        {
            var e = Assert.Throws<PeftSharpException>(() => OutputLock.Acquire(dir));
            Assert.Contains($"process {Environment.ProcessId}", e.Message);
            using var model = new TinyCausalLM(TinyTokenizer.Vocab, 7);
            var args = Args("locked");
            Assert.Throws<PeftSharpException>(() => new SftTrainer(model, args, Data()).Train());
        }
        // A lock file left by a run that died (kill -9: the system dropped its lock) is taken over.
        File.WriteAllText(Path.Combine(dir, OutputLock.FileName + ".owner"), "999999\n");
        using var taken = OutputLock.Acquire(dir);
        Assert.Equal("999999", taken.PreviousOwner);
    }

    [Fact]
    public void TemporariesOfAKilledRunAreRemovedAtTheNextStart()
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 8);
        var args = Args("stale", a => { a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 4; a.SaveTotalLimit = 1; });
        Directory.CreateDirectory(Path.Combine(args.OutputDir, ".checkpoint-4.0123abcd.tmp"));
        Directory.CreateDirectory(Path.Combine(args.OutputDir, ".deleting-checkpoint-2.4567"));
        File.WriteAllText(Path.Combine(args.OutputDir, ".adapter_model.safetensors.123.abc.tmp"), "torn");
        // A half-written checkpoint without trainer_state.json is not a checkpoint.
        Directory.CreateDirectory(Path.Combine(args.OutputDir, "checkpoint-99"));
        Assert.Empty(SftTrainer.Checkpoints(args.OutputDir));
        new SftTrainer(model, args, Data()).Train();
        var left = Directory.GetFileSystemEntries(args.OutputDir).Select(Path.GetFileName).Where(n => n!.StartsWith('.')).ToList();
        Assert.Empty(left);
        Assert.Equal([8], SftTrainer.Checkpoints(args.OutputDir).Select(c => c.Step));
    }

    [Theory]
    [InlineData("\"global_step\": 4,", "\"global_step\": \"4\",", "global_step must be a number")]
    [InlineData("\"global_step\": 4,", "\"global_step\": -5,", "global_step is -5")]
    [InlineData("\"epoch_index\": 0,", "\"epoch_index\": -3,", "epoch_index is -3")]
    [InlineData("\"step_in_epoch\": 4,", "\"step_in_epoch\": 3,", "do not give global_step 4")]
    [InlineData("{", "[]", "expected a JSON object")]
    public void ACorruptTrainerStateIsAClearErrorOnResume(string find, string replace, string expected)
    {
        using var model = new TinyCausalLM(TinyTokenizer.Vocab, 9);
        var args = Args("corrupt" + Math.Abs(replace.GetHashCode()), a => { a.SaveStrategy = SaveStrategy.Steps; a.SaveSteps = 4; });
        new SftTrainer(model, args, Data()).Train();
        string path = Path.Combine(args.OutputDir, "checkpoint-4", TrainerState.FileName);
        string text = File.ReadAllText(path);
        Assert.Contains(find, text);
        File.WriteAllText(path, find == "{" ? replace : text.Replace(find, replace));
        args.ResumeFromCheckpoint = Path.Combine(args.OutputDir, "checkpoint-4");
        var e = Assert.Throws<PeftSharpException>(() => new SftTrainer(model, args, Data()).Train());
        Assert.Contains(expected, e.Message);
    }

    private sealed class ExplodeAfter(ICausalLM inner, int goodCalls) : ICausalLM
    {
        private int _calls;
        public PeftSharp.Formats.HfConfig.ModelConfig Config => inner.Config;
        public IReadOnlyList<LinearSlot> Linears => inner.Linears;
        public IEnumerable<PeftSharp.Tensors.Parameter> Parameters => inner.Parameters;
        public PeftSharp.Tensors.Tensor Forward(PeftSharp.Autograd.Ops ops, TokenBatch batch) => inner.Forward(ops, batch);
        public PeftSharp.Tensors.Tensor Loss(PeftSharp.Autograd.Ops ops, TokenBatch batch) =>
            ++_calls > goodCalls ? ops.Scale(inner.Loss(ops, batch), 20f) : inner.Loss(ops, batch);
        public IDecodeSession StartDecoding(int batch, int maxTokens) => inner.StartDecoding(batch, maxTokens);
        public void Dispose() => inner.Dispose();
    }

    [Fact]
    public void ALossThatExplodesWithoutReachingNaNIsReported()
    {
        using var model = new ExplodeAfter(new TinyCausalLM(TinyTokenizer.Vocab, 12), goodCalls: 4);
        var result = new SftTrainer(model, Args("explode"), Data()).Train();
        var warning = Assert.Single(result.Warnings);
        Assert.Contains("at step 5: the run is diverging", warning);
        using var calm = new TinyCausalLM(TinyTokenizer.Vocab, 12);
        Assert.Empty(new SftTrainer(calm, Args("calm"), Data()).Train().Warnings);
    }

    [Fact]
    public void NeftuneNoisesTheEmbeddingsInTrainingOnly()
    {
        var config = PeftSharp.Models.Init.ModelPresets.CreateConfig("tiny", "llama", 64);
        using var model = CausalLM.CreateRandom(config, new PeftSharp.Tensors.Rng(1));
        var batch = new TokenBatch(2, 6, Enumerable.Range(0, 12).Select(i => i % 64).ToArray());
        float Loss(bool training, double? alpha, ulong key)
        {
            model.NeftuneNoiseAlpha = alpha;
            model.Reseed(key);
            using var tape = new PeftSharp.Autograd.Tape { Training = training };
            return model.Loss(new PeftSharp.Autograd.Ops(tape), batch).AsSpan()[0];
        }
        float clean = Loss(true, null, 1);
        Assert.NotEqual(clean, Loss(true, 5, 1));
        Assert.Equal(Loss(true, 5, 1), Loss(true, 5, 1)); // the same key, the same noise
        Assert.NotEqual(Loss(true, 5, 1), Loss(true, 5, 2));
        Assert.Equal(clean, Loss(false, 5, 1)); // evaluation is never noised
    }

    [Fact]
    public void TransformersSchedulersGiveTheirFormulas()
    {
        var a = new TrainingArguments { LearningRate = 1.0, LrSchedulerType = "cosine_with_min_lr", WarmupSteps = 2, LrSchedulerKwargs = new JsonObject { ["min_lr"] = 0.1 } };
        var s = LrSchedule.From(a, 10);
        Assert.Equal(0.5, s.Factor(1), 12);
        Assert.Equal(1.0, s.Factor(2), 12);
        Assert.Equal(0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * 4 / 8.0)), s.Factor(6), 12);
        Assert.Equal(0.1, s.Factor(10), 12);
        var w = new TrainingArguments
        {
            LearningRate = 1.0, LrSchedulerType = "warmup_stable_decay", WarmupSteps = 2,
            LrSchedulerKwargs = new JsonObject { ["num_decay_steps"] = 4, ["decay_type"] = "linear", ["min_lr_ratio"] = 0.2 },
        };
        var wsd = LrSchedule.From(w, 10); // stable = 10 − 2 − 4 = 4
        Assert.Equal(0.2 + 0.8 * 0.5, wsd.Factor(1), 12);
        Assert.Equal(1.0, wsd.Factor(5), 12);
        Assert.Equal(0.2 + 0.8 * (1 - 2 / 4.0), wsd.Factor(8), 12);
        Assert.Equal(0.2, wsd.Factor(10), 12);
        var bad = new TrainingArguments { LrSchedulerType = "cosine_with_min_lr" };
        Assert.Contains("min_lr or min_lr_rate", Assert.Throws<PeftSharpException>(() => LrSchedule.From(bad, 10)).Message);
        var extra = new TrainingArguments { LrSchedulerType = "cosine", LrSchedulerKwargs = new JsonObject { ["power"] = 2 } };
        Assert.Contains("lr_scheduler_kwargs.power", Assert.Throws<PeftSharpException>(() => LrSchedule.From(extra, 10)).Message);
    }

    [Fact]
    public unsafe void AdafactorTakesTransformersFirstStep()
    {
        using var w = PeftSharp.Tensors.Parameter.Create("w", [2, 2], requiresGrad: true);
        using var b = PeftSharp.Tensors.Parameter.Create("b", [2], requiresGrad: true);
        float[] w0 = [0.5f, -1f, 2f, 0.25f], g = [0.1f, -0.2f, 0.3f, 0.4f], b0 = [1f, 2f], gb = [0.5f, -0.5f];
        w0.CopyTo(w.AsSpan()); g.CopyTo(w.GradSpan()); b0.CopyTo(b.AsSpan()); gb.CopyTo(b.GradSpan());
        using var opt = new Adafactor([w, b], learningRate: 0.01f);
        opt.Step();
        // Step 1: β2ₜ = 1 − 1^−0.8 = 0, so the running means are this step's: rows r = mean_c(g²), columns c = mean_r(g²).
        double[] r = [(0.01 + 0.04) / 2, (0.09 + 0.16) / 2], c = [(0.01 + 0.09) / 2, (0.04 + 0.16) / 2];
        double rMean = (r[0] + r[1]) / 2;
        var u = new double[4];
        for (int i = 0; i < 2; i++) for (int j = 0; j < 2; j++) u[i * 2 + j] = g[i * 2 + j] / Math.Sqrt(r[i] / rMean * c[j]);
        double rms = Math.Sqrt(u.Sum(x => x * x) / 4);
        for (int k = 0; k < 4; k++) Assert.Equal(w0[k] - 0.01 * u[k] / Math.Max(1, rms), w.AsSpan()[k], 5);
        // A vector: g/√(g²) = sign(g), RMS 1: b − lr·sign(g).
        Assert.Equal(1f - 0.01f, b.AsSpan()[0], 5);
        Assert.Equal(2f + 0.01f, b.AsSpan()[1], 5);
    }
}

/// <summary>An independent reader of TensorBoard event files: TFRecord framing with CRC-32C (a table, not the intrinsic) and Event protos.</summary>
internal static class TfEvents
{
    public sealed record Event(long Step, string? FileVersion, List<(string Tag, float Value)> Values);

    private static readonly uint[] Table = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    private static uint Masked(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte x in data) crc = Table[(crc ^ x) & 0xFF] ^ (crc >> 8);
        crc = ~crc;
        return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    }

    public static List<Event> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var events = new List<Event>();
        int o = 0;
        while (o < bytes.Length)
        {
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(o));
            Assert.Equal(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(o + 8)), Masked(bytes.AsSpan(o, 8)));
            var record = bytes.AsSpan(o + 12, (int)length);
            Assert.Equal(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(o + 12 + (int)length)), Masked(record));
            events.Add(ParseEvent(record.ToArray()));
            o += 16 + (int)length;
        }
        return events;
    }

    private static Event ParseEvent(byte[] b)
    {
        long step = 0;
        string? version = null;
        var values = new List<(string, float)>();
        foreach (var (field, wire, value, bytes) in Fields(b))
        {
            if (field == 2 && wire == 0) step = (long)value;
            else if (field == 3) version = Encoding.UTF8.GetString(bytes!);
            else if (field == 5)
                foreach (var (f, _, _, v) in Fields(bytes!))
                    if (f == 1)
                    {
                        string tag = "";
                        float x = float.NaN;
                        foreach (var (vf, vw, vv, vb) in Fields(v!))
                        {
                            if (vf == 1) tag = Encoding.UTF8.GetString(vb!);
                            if (vf == 2 && vw == 5) x = BitConverter.UInt32BitsToSingle((uint)vv);
                        }
                        values.Add((tag, x));
                    }
        }
        return new Event(step, version, values);
    }

    private static IEnumerable<(int Field, int Wire, ulong Value, byte[]? Bytes)> Fields(byte[] b)
    {
        int o = 0;
        ulong Varint()
        {
            ulong v = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte x = b[o++];
                v |= (ulong)(x & 0x7F) << shift;
                if (x < 0x80) return v;
            }
        }
        var list = new List<(int, int, ulong, byte[]?)>();
        while (o < b.Length)
        {
            ulong key = Varint();
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: list.Add((field, 0, Varint(), null)); break;
                case 1: list.Add((field, 1, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(o)), null)); o += 8; break;
                case 5: list.Add((field, 5, BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(o)), null)); o += 4; break;
                case 2:
                {
                    int n = (int)Varint();
                    list.Add((field, 2, 0, b.AsSpan(o, n).ToArray()));
                    o += n;
                    break;
                }
                default: throw new InvalidDataException($"wire type {wire}");
            }
        }
        return list;
    }
}
