using System.Runtime.InteropServices;
using PeftSharp.Autograd;
using PeftSharp.Tensors;
using PeftSharp.Training.Optimizers;

namespace PeftSharp.Training.Distributed;

/// <summary>An optimizer whose state lives on several ranks: every rank must call <see cref="GatherForSave"/> before rank 0 saves it.</summary>
public interface IShardedOptimizer : IOptimizer
{
    /// <summary>Collective: copies every rank's share of the state to rank 0, which <see cref="IOptimizer.SaveState"/> then writes whole.</summary>
    void GatherForSave();
}

/// <summary>
/// ZeRO stage 1 for AdamW: the trainable parameters are split among the ranks (whole parameters, largest first to the
/// least-loaded rank), each rank keeps AdamW's two moments for its own parameters only (about 1/N of the state), updates
/// them from the all-reduced, clipped gradients, and then every rank's updated parameters are broadcast from their owner
/// (one broadcast per rank). AdamW is element-wise, so the update is bit-for-bit the unsharded one. Checkpoints hold the
/// whole state in AdamW's own file format (gathered to rank 0 when saving), so a run resumes with any number of ranks,
/// sharded or not.
/// </summary>
public sealed unsafe class ZeroOneAdamW : IShardedOptimizer
{
    private readonly ICommunicator _comm;
    private readonly IReadOnlyList<Parameter> _all;
    private readonly List<Parameter>[] _owned;
    private readonly AdamW _inner;
    private readonly Dictionary<Parameter, (float[] M, float[] V)> _gathered = new(ReferenceEqualityComparer.Instance);

    public ZeroOneAdamW(IEnumerable<Parameter> parameters, ICommunicator comm, float learningRate, float beta1, float beta2, float eps,
        float weightDecay, Predicate<Parameter>? applyWeightDecay)
    {
        _comm = comm;
        _all = parameters.Where(p => p.RequiresGrad).ToList();
        _owned = Partition(_all, comm.Size);
        _inner = new AdamW(_owned[comm.Rank], learningRate, beta1, beta2, eps, weightDecay, applyWeightDecay);
    }

    /// <summary>The optim names ZeRO-1 shards (32-bit AdamW); other optimizers keep their whole state on every rank.</summary>
    public static bool Supports(string optim) => optim is "adamw_torch" or "adamw_torch_fused" or "adamw_hf" or "paged_adamw_32bit";

    public static ZeroOneAdamW Create(TrainingArguments args, IEnumerable<Parameter> parameters, ICommunicator comm)
    {
        if (!Supports(args.Optim))
            throw new PeftSharpException($"training.optim: optimizer-state sharding (ZeRO-1) is implemented for AdamW (adamw_torch), not '{args.Optim}'.");
        return new ZeroOneAdamW(parameters, comm, (float)args.LearningRate, (float)args.AdamBeta1, (float)args.AdamBeta2, (float)args.AdamEpsilon,
            (float)args.WeightDecay, GradientNorm.Decays);
    }

    /// <summary>Which rank owns which parameters: largest first, each to the rank with the fewest elements so far (ties: lowest rank).</summary>
    public static List<Parameter>[] Partition(IReadOnlyList<Parameter> parameters, int ranks)
    {
        var owned = Enumerable.Range(0, ranks).Select(_ => new List<Parameter>()).ToArray();
        var load = new long[ranks];
        var owner = new Dictionary<Parameter, int>(ReferenceEqualityComparer.Instance);
        foreach (var (p, _) in parameters.Select((p, i) => (p, i)).OrderByDescending(x => x.p.Length).ThenBy(x => x.i))
        {
            int r = 0;
            for (int k = 1; k < ranks; k++) if (load[k] < load[r]) r = k;
            load[r] += p.Length;
            owner[p] = r;
        }
        foreach (var p in parameters) owned[owner[p]].Add(p); // each rank's list in the model's order
        return owned;
    }

    /// <summary>Elements of AdamW state (per moment) this rank holds.</summary>
    public long OwnedElements => _owned[_comm.Rank].Sum(p => p.Length);

    public float LearningRate { get => _inner.LearningRate; set => _inner.LearningRate = value; }
    public long StepCount { get => _inner.StepCount; set => _inner.StepCount = value; }
    public IReadOnlyList<Parameter> Parameters => _all;

    public void Step()
    {
        _inner.Step();
        for (int r = 0; r < _comm.Size; r++) BroadcastFrom(r, _owned[r].Select(p => (nint)p.Data).ToList());
    }

    /// <summary>The concatenated buffers (one per owned parameter of <paramref name="root"/>) copied from root to every rank.</summary>
    private void BroadcastFrom(int root, IReadOnlyList<nint> buffers, List<float[]>? keep = null)
    {
        var parameters = _owned[root];
        long total = parameters.Sum(p => p.Length);
        if (total == 0) return;
        var flat = new float[checked((int)total)];
        int o = 0;
        if (_comm.Rank == root)
            for (int i = 0; i < parameters.Count; i++) { new ReadOnlySpan<float>((float*)buffers[i], (int)parameters[i].Length).CopyTo(flat.AsSpan(o)); o += (int)parameters[i].Length; }
        _comm.Broadcast(MemoryMarshal.AsBytes(flat.AsSpan()), root);
        o = 0;
        for (int i = 0; i < parameters.Count; i++)
        {
            int n = (int)parameters[i].Length;
            if (keep != null) keep.Add(flat.AsSpan(o, n).ToArray());
            else if (_comm.Rank != root) flat.AsSpan(o, n).CopyTo(new Span<float>((float*)buffers[i], n));
            o += n;
        }
    }

    public void ZeroGrad()
    {
        foreach (var p in _all) p.ZeroGrad();
    }

    public void GatherForSave()
    {
        _gathered.Clear();
        for (int r = 1; r < _comm.Size; r++)
        {
            var owned = _owned[r];
            var mine = _comm.Rank == r;
            var moments = new List<float[]>();
            BroadcastFrom(r, mine ? owned.Select(p => (nint)_inner.FirstMoment(p).Pointer).ToList() : owned.Select(_ => (nint)0).ToList(), moments);
            var seconds = new List<float[]>();
            BroadcastFrom(r, mine ? owned.Select(p => (nint)_inner.SecondMoment(p).Pointer).ToList() : owned.Select(_ => (nint)0).ToList(), seconds);
            if (_comm.Rank == 0)
                for (int i = 0; i < owned.Count; i++) _gathered[owned[i]] = (moments[i], seconds[i]);
        }
    }

    /// <summary>Rank 0, after <see cref="GatherForSave"/>: the whole state in AdamW's format (the same file an unsharded run writes).</summary>
    public void SaveState(string path)
    {
        var pins = new List<GCHandle>();
        try
        {
            var entries = new List<Formats.Safetensors.SafetensorsEntry>();
            foreach (var p in _all)
            {
                float* m, v;
                if (_owned[_comm.Rank].Contains(p)) { m = _inner.FirstMoment(p).Pointer; v = _inner.SecondMoment(p).Pointer; }
                else if (_gathered.TryGetValue(p, out var g))
                {
                    var hm = GCHandle.Alloc(g.M, GCHandleType.Pinned);
                    var hv = GCHandle.Alloc(g.V, GCHandleType.Pinned);
                    pins.Add(hm);
                    pins.Add(hv);
                    m = (float*)hm.AddrOfPinnedObject();
                    v = (float*)hv.AddrOfPinnedObject();
                }
                else throw new InvalidOperationException($"ZeRO-1: the state of {p.Name} was not gathered to rank 0 before saving.");
                entries.Add(OptimizerStateFile.Entry(p.Name + ".exp_avg", DType.F32, p.Length, m));
                entries.Add(OptimizerStateFile.Entry(p.Name + ".exp_avg_sq", DType.F32, p.Length, v));
            }
            OptimizerStateFile.Write(path, "adamw", StepCount, entries);
        }
        finally
        {
            foreach (var h in pins) h.Free();
            _gathered.Clear();
        }
    }

    /// <summary>Every rank reads its own parameters' moments from an AdamW state file (written by any number of ranks).</summary>
    public void LoadState(string path) => _inner.LoadState(path);

    public void Dispose() => _inner.Dispose();
}
