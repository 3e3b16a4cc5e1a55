using System.Runtime.InteropServices;
using PeftSharp.Autograd;
using PeftSharp.Tensors;
using PeftSharp.Tests.Data;
using PeftSharp.Training;
using PeftSharp.Training.Distributed;
using PeftSharp.Training.Optimizers;
using PeftSharp.Training.Sft;

namespace PeftSharp.Tests.Training.Distributed;

/// <summary>The distribution logic without a launcher: ranks as threads (<see cref="LocalGroup"/>), launcher detection, the same-run check, ZeRO-1.</summary>
public sealed class DistributedTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-dist").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static Func<string, string?> Env(params (string, string)[] vars) => name => vars.FirstOrDefault(v => v.Item1 == name).Item2;

    [Fact]
    public void NoLauncherMeansOneProcessAndNoMpi()
    {
        Assert.False(MpiLauncher.IsLaunched(Env()));
        Assert.Same(SingleProcess.Instance, DistributedRun.Start(Env()));
        Assert.True(MpiLauncher.IsLaunched(Env(("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "1"))));
        Assert.Equal(1, MpiLauncher.Rank(Env(("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "1"))));
        Assert.True(MpiLauncher.IsLaunched(Env(("PMI_SIZE", "4"), ("PMI_RANK", "3"))));
        Assert.Equal(3, MpiLauncher.Rank(Env(("PMI_SIZE", "4"), ("PMI_RANK", "3"))));
        Assert.False(MpiLauncher.IsLaunched(Env(("OMPI_COMM_WORLD_SIZE", "1"))));
        Assert.False(MpiLauncher.IsLaunched(Env(("OMPI_COMM_WORLD_SIZE", "2"), ("PEFTSHARP_MPI", "0"))));
        Assert.Equal(0, MpiLauncher.Rank(Env(("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "1"), ("PEFTSHARP_MPI", "off"))));
    }

    [Fact]
    public void ThreadsPerRankFollowTheCoresGiven()
    {
        Assert.Equal(8, MpiLauncher.ThreadsPerRank(availableCores: 16, machineCores: 16, localRanks: 2, overrideValue: null)); // unbound: shared
        Assert.Equal(4, MpiLauncher.ThreadsPerRank(4, 16, 2, null));   // bound to 4 cores (--bind-to, cpus-per-rank)
        Assert.Equal(16, MpiLauncher.ThreadsPerRank(16, 16, 1, null));
        Assert.Equal(1, MpiLauncher.ThreadsPerRank(2, 2, 4, null));     // oversubscribed: at least one
        Assert.Equal(3, MpiLauncher.ThreadsPerRank(16, 16, 2, "3"));   // PEFTSHARP_THREADS
    }

    [Fact]
    public void ADifferentFileOnOneRankIsNamedOnEveryRank()
    {
        string a = Path.Combine(_dir, "a"), b = Path.Combine(_dir, "b");
        Directory.CreateDirectory(a);
        Directory.CreateDirectory(b);
        File.WriteAllText(Path.Combine(a, "config.json"), "{\"n\": 1}");
        File.WriteAllText(Path.Combine(b, "config.json"), "{\"n\": 2}");
        Assert.Equal(DistributedRun.Fingerprint("cfg", [a]), DistributedRun.Fingerprint("cfg", [a]));
        Assert.NotEqual(DistributedRun.Fingerprint("cfg", [a]), DistributedRun.Fingerprint("cfg2", [a]));
        var messages = new string?[2];
        LocalGroup.Run(2, comm =>
        {
            var print = DistributedRun.Fingerprint("cfg", [comm.Rank == 0 ? a : b]);
            messages[comm.Rank] = Assert.Throws<PeftSharpException>(() => DistributedRun.CheckSameRun(comm, () => print, "config, model or data files")).Message;
        });
        Assert.Equal(messages[0], messages[1]);
        Assert.Contains("rank 1 of 2 was given a different run than rank 0", messages[0]);
        LocalGroup.Run(2, comm => DistributedRun.CheckSameRun(comm, () => DistributedRun.Fingerprint("cfg", [a]), "files"));
        DistributedRun.CheckSameRun(SingleProcess.Instance, () => throw new InvalidOperationException("a single process hashes nothing"), "files");
    }

    [Fact]
    public void DivergedReplicasStopTheRun()
    {
        LocalGroup.Run(2, comm => DistributedRun.CheckReplicas(comm, Params(), 5));
        var messages = new string?[2];
        LocalGroup.Run(2, comm =>
        {
            var ps = Params();
            if (comm.Rank == 1) ps[2].AsSpan()[7] += 1e-6f;
            messages[comm.Rank] = Assert.Throws<PeftSharpException>(() => DistributedRun.CheckReplicas(comm, ps, 5)).Message;
        });
        Assert.Equal(messages[0], messages[1]);
        Assert.Contains("at step 5 the trainable parameters of rank 1 differ from rank 0's", messages[0]);
    }

    private static Parameter Param(string name, int[] shape, ulong seed)
    {
        var p = Parameter.Create(name, shape, requiresGrad: true);
        new Rng(seed).FillNormal(p.AsSpan(), 0f, 1f);
        return p;
    }

    private static Parameter[] Params() =>
        [Param("a.weight", [24, 16], 1), Param("a.bias", [24], 2), Param("b.weight", [8, 40], 3), Param("norm.weight", [16], 4), Param("c.weight", [33, 7], 5)];

    private static void Grads(Parameter[] ps, int step)
    {
        for (int i = 0; i < ps.Length; i++) new Rng((ulong)(100 * step + i)).FillNormal(ps[i].GradSpan(), 0f, 0.1f);
    }

    private static byte[] Bytes(IEnumerable<Parameter> ps) => ps.SelectMany(p => MemoryMarshal.AsBytes(p.AsSpan()).ToArray()).ToArray();

    /// <summary>ZeRO-1 over 2 ranks: each holds about half of AdamW's state, the parameters after every step and the saved state are AdamW's bytes, and a resume continues them.</summary>
    [Fact]
    public void ZeroOneIsAdamWBitForBitWithHalfTheState()
    {
        var reference = Params();
        string referenceState = Path.Combine(_dir, "ref.safetensors"), zeroState = Path.Combine(_dir, "zero.safetensors");
        var after = new List<byte[]>();
        using (var adam = new AdamW(reference, 1e-2f, weightDecay: 0.1f, applyWeightDecay: GradientNorm.Decays))
        {
            for (int step = 1; step <= 3; step++)
            {
                Grads(reference, step);
                adam.Step();
                after.Add(Bytes(reference));
            }
            adam.SaveState(referenceState);
        }
        long total = reference.Sum(p => p.Length);
        var owned = new long[2];
        LocalGroup.Run(2, comm =>
        {
            var ps = Params();
            using var zero = new ZeroOneAdamW(ps, comm, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, GradientNorm.Decays);
            owned[comm.Rank] = zero.OwnedElements;
            for (int step = 1; step <= 3; step++)
            {
                Grads(ps, step);
                zero.Step();
                Assert.Equal(after[step - 1], Bytes(ps));
            }
            zero.GatherForSave();
            if (comm.Rank == 0) zero.SaveState(zeroState);
        });
        Assert.Equal(total, owned.Sum());
        Assert.True(owned.Max() <= total * 0.6, $"owned {owned[0]} + {owned[1]} of {total}");
        Assert.Equal(File.ReadAllBytes(referenceState), File.ReadAllBytes(zeroState));

        // A sharded run resumes from the whole file (written by any number of ranks) and continues as AdamW does.
        using var again = new AdamW(reference, 1e-2f, weightDecay: 0.1f, applyWeightDecay: GradientNorm.Decays);
        again.LoadState(referenceState);
        Grads(reference, 4);
        again.Step();
        var expected = Bytes(reference);
        LocalGroup.Run(2, comm =>
        {
            var ps = Params();
            int o = 0;
            foreach (var p in ps) { after[2].AsSpan(o, (int)p.Length * 4).CopyTo(MemoryMarshal.AsBytes(p.AsSpan())); o += (int)p.Length * 4; }
            using var zero = new ZeroOneAdamW(ps, comm, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, GradientNorm.Decays);
            zero.LoadState(zeroState);
            Assert.Equal(3, zero.StepCount);
            Grads(ps, 4);
            zero.Step();
            Assert.Equal(expected, Bytes(ps));
        });
        foreach (var p in reference) p.Dispose();
    }

    /// <summary>Evaluation split over 2 ranks (batches 0, 2 and 1, 3 of 4) and all-reduced: the whole set's metrics on both ranks.</summary>
    [Fact]
    public void EvaluationSplitOverRanksGivesTheWholeMetrics()
    {
        var data = TrainerTests.Dataset(10);
        LossMetrics whole;
        using (var model = new TinyCausalLM(TinyTokenizer.Vocab, 21)) whole = LossEvaluation.Evaluate(model, data, 3);
        var parts = new LossMetrics[2];
        LocalGroup.Run(2, comm =>
        {
            using var model = new TinyCausalLM(TinyTokenizer.Vocab, 21);
            parts[comm.Rank] = LossEvaluation.Evaluate(model, data, 3, null, comm);
        });
        Assert.Equal(parts[0], parts[1]);
        Assert.Equal(whole.TargetTokens, parts[0].TargetTokens);
        Assert.Equal(whole.MeanTokenAccuracy, parts[0].MeanTokenAccuracy);
        Assert.Equal(whole.Loss, parts[0].Loss, 1e-12);
    }

    /// <summary>An objective that records the rows each rank is given; its loss is constant (the point is the sharding).</summary>
    private sealed class RowRecorder(int rows) : ITrainingObjective<int[]>
    {
        public List<int> Seen { get; } = [];
        public int RowCount => rows;
        public int[] Collate(ReadOnlySpan<int> r) => r.ToArray();
        public long TargetCount(int[] batch) => batch.Length;
        public long TokenCount(int[] batch) => batch.Length;
        public MicroBatchResult Accumulate(Tape tape, int[] batch, double scale)
        {
            Seen.AddRange(batch);
            return new MicroBatchResult(1.0);
        }
        public bool CanEvaluate => false;
        public IReadOnlyCollection<string> EvalMetricNames => ["loss"];
        public IReadOnlyDictionary<string, double> Evaluate(Tape tape) => throw new NotSupportedException();
    }

    /// <summary>13 rows, 2 ranks, batch 2, accumulation 1: every row once per epoch across the ranks, no row on both, the same steps on both.</summary>
    [Fact]
    public void EveryExampleOncePerEpochAcrossRanks()
    {
        const int rows = 13;
        var seen = new List<int>[2];
        var steps = new int[2];
        LocalGroup.Run(2, comm =>
        {
            using var model = new TinyCausalLM(TinyTokenizer.Vocab, 3);
            var recorder = new RowRecorder(rows);
            var args = new TrainingArguments
            {
                OutputDir = Path.Combine(_dir, "cover"), NumTrainEpochs = 2, PerDeviceTrainBatchSize = 2, GradientAccumulationSteps = 1,
                SaveStrategy = SaveStrategy.No, LoggingSteps = 1, Seed = 3,
            };
            var trainer = new Trainer<int[]>(model, args, recorder, new TrainerOptions { Communicator = comm });
            steps[comm.Rank] = trainer.Train().GlobalStep;
            seen[comm.Rank] = recorder.Seen;
        });
        Assert.Equal(steps[0], steps[1]);
        Assert.Equal(8, steps[0]); // ceil(7 micro-batches / 2 per step) = 4 steps per epoch
        // Each rank's rows split by epoch: epoch e's rows are the first ones of that rank until the epoch's share is used.
        var all = seen[0].Concat(seen[1]).ToList();
        Assert.Equal(2 * rows, all.Count);
        foreach (var g in all.GroupBy(x => x)) Assert.Equal(2, g.Count());
        int half0 = seen[0].Count / 2, half1 = seen[1].Count / 2;
        var epoch0 = seen[0].Take(half0).Concat(seen[1].Take(half1)).ToList();
        Assert.Equal(Enumerable.Range(0, rows), epoch0.Order());
    }

    /// <summary>
    /// The trainer on 2 thread-ranks (SFT, LoRA-like trainable linears, accumulation 1 each) gives the single process's
    /// parameters with accumulation 2, bit for bit: the same micro-batches, the same dropout keys, a two-term sum.
    /// </summary>
    [Fact]
    public void TwoRanksGiveTheSingleProcessParametersBitForBit()
    {
        var data = TrainerTests.Dataset(10);
        TrainingArguments Args(string name, int accumulation) => new()
        {
            OutputDir = Path.Combine(_dir, name), LearningRate = 1e-2, MaxSteps = 4, PerDeviceTrainBatchSize = 2,
            GradientAccumulationSteps = accumulation, LoggingSteps = 1, SaveStrategy = SaveStrategy.No, Seed = 5, WarmupSteps = 1, MaxGradNorm = 1.0,
        };
        byte[] single;
        double singleLoss;
        using (var model = new TinyCausalLM(TinyTokenizer.Vocab, 21, trainAll: false))
        {
            singleLoss = new SftTrainer(model, Args("single", 2), new SftObjective(model, data, null, 2), new TrainerOptions()).Train().TrainingLoss;
            single = Bytes(model.Parameters.Where(p => p.RequiresGrad));
        }
        var ranks = new byte[2][];
        var losses = new double[2];
        LocalGroup.Run(2, comm =>
        {
            using var model = new TinyCausalLM(TinyTokenizer.Vocab, 21, trainAll: false);
            losses[comm.Rank] = new SftTrainer(model, Args("two", 1), new SftObjective(model, data, null, 2), new TrainerOptions { Communicator = comm }).Train().TrainingLoss;
            ranks[comm.Rank] = Bytes(model.Parameters.Where(p => p.RequiresGrad));
        });
        Assert.Equal(single, ranks[0]);
        Assert.Equal(single, ranks[1]);
        Assert.Equal(singleLoss, losses[0], 12);
    }
}
