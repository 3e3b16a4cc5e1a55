using System.Diagnostics;

namespace PeftSharp.Autograd;

/// <summary>What a training step's wall time is split into by <see cref="StepProfiler"/>.</summary>
public enum StepPart
{
    /// <summary>Outside every scope: the trainer loop, collation, gradient clipping, the tape's own bookkeeping.</summary>
    Other,
    /// <summary>The token embedding lookup (and NEFTune noise), forward and backward.</summary>
    Embedding,
    /// <summary>A decoder layer's own ops outside its linears and attention: norms, activations, RoPE, residual adds, the
    /// checkpoint's copies; and the final norm.</summary>
    NormsActivations,
    /// <summary>The frozen 4-bit products (<see cref="Ops4Bit.Linear4Bit"/>): the dequant-GEMM forward, the input gradient backward.</summary>
    Linear4Bit,
    /// <summary>The adapters around the base layers: dropout, A, B, scaling and the add, with their gradients.</summary>
    Lora,
    /// <summary>Causal attention's kernel, forward and backward.</summary>
    Attention,
    /// <summary>The output layer and the loss, forward and backward.</summary>
    HeadLoss,
    /// <summary>The optimizer's step and zeroing the gradients.</summary>
    Optimizer,
}

/// <summary>When within a step a part ran: the first forward, the forward recomputed under gradient checkpointing, or backward.</summary>
public enum StepPhase { Forward, Recompute, Backward }

/// <summary>
/// An opt-in profile of training steps: wall time of the thread that called <see cref="Start"/>, split by
/// <see cref="StepPart"/> and <see cref="StepPhase"/>. Code marks a part with <c>using var _ = StepProfiler.Enter(part)</c>;
/// time is exclusive (a nested part's time is not its parent's), and time outside every scope is
/// <see cref="StepPart.Other"/>, so the cells sum to the wall time between <see cref="Start"/> and <see cref="Stop"/>.
/// A backward node is charged to the part that was current when its forward recorded it (<see cref="Tape"/> wraps it).
/// Kernels that run on the worker pool are timed as the calling thread waits for them. Off (the default), a scope is
/// one static read and a backward node is not wrapped; other threads are never profiled.
/// </summary>
public static class StepProfiler
{
    private const int MaxDepth = 64;
    private static readonly int Parts = Enum.GetValues<StepPart>().Length, Phases = Enum.GetValues<StepPhase>().Length;
    private static bool _active;
    private static int _owner;
    private static readonly long[] Ticks = new long[Parts * Phases];
    private static readonly StepPart[] PartStack = new StepPart[MaxDepth];
    private static readonly StepPhase[] PhaseStack = new StepPhase[MaxDepth];
    private static int _partDepth, _phaseDepth;
    private static StepPart _part;
    private static StepPhase _phase;
    private static long _since, _started;

    /// <summary>True while the calling thread is being profiled.</summary>
    public static bool IsProfiling => _active && Environment.CurrentManagedThreadId == _owner;

    /// <summary>Starts profiling the calling thread from zero (any earlier profile is dropped).</summary>
    public static void Start()
    {
        Array.Clear(Ticks);
        (_partDepth, _phaseDepth, _part, _phase) = (0, 0, StepPart.Other, StepPhase.Forward);
        _owner = Environment.CurrentManagedThreadId;
        _since = _started = Stopwatch.GetTimestamp();
        _active = true;
    }

    /// <summary>Stops profiling and returns the seconds of each part and phase since <see cref="Start"/>.</summary>
    public static StepProfile Stop()
    {
        if (!IsProfiling) throw new InvalidOperationException("StepProfiler.Stop: this thread is not profiling (call Start first).");
        Charge();
        _active = false;
        if (_partDepth != 0 || _phaseDepth != 0)
            throw new InvalidOperationException($"StepProfiler.Stop inside {_partDepth} part and {_phaseDepth} phase scopes: stop between steps.");
        var seconds = new double[Parts * Phases];
        for (int i = 0; i < seconds.Length; i++) seconds[i] = (double)Ticks[i] / Stopwatch.Frequency;
        return new StepProfile(seconds, (double)(_since - _started) / Stopwatch.Frequency);
    }

    /// <summary>Stops profiling the calling thread, if it is, when disposed, keeping nothing: for a run that ends with an exception mid-step.</summary>
    public static IDisposable CancelOnDispose() => new Canceller();

    private sealed class Canceller : IDisposable
    {
        public void Dispose()
        {
            if (IsProfiling) _active = false;
        }
    }

    /// <summary>Charges the time until the returned scope is disposed to <paramref name="part"/> (nothing when not profiling).</summary>
    public static Scope Enter(StepPart part)
    {
        if (!_active || Environment.CurrentManagedThreadId != _owner) return default;
        Charge();
        if (_partDepth == MaxDepth) throw new InvalidOperationException("StepProfiler: parts nested too deeply.");
        PartStack[_partDepth++] = _part;
        _part = part;
        return new Scope(Scope.PartKind);
    }

    /// <summary>Runs the returned scope's time in <paramref name="phase"/> (nothing when not profiling).</summary>
    public static Scope EnterPhase(StepPhase phase)
    {
        if (!_active || Environment.CurrentManagedThreadId != _owner) return default;
        Charge();
        if (_phaseDepth == MaxDepth) throw new InvalidOperationException("StepProfiler: phases nested too deeply.");
        PhaseStack[_phaseDepth++] = _phase;
        _phase = phase;
        return new Scope(Scope.PhaseKind);
    }

    /// <summary>A backward node that runs under the part current now (the node itself when not profiling).</summary>
    internal static Action Attribute(Action backward)
    {
        if (!IsProfiling) return backward;
        var part = _part;
        return () =>
        {
            using var scope = Enter(part);
            backward();
        };
    }

    private static void Charge()
    {
        long now = Stopwatch.GetTimestamp();
        Ticks[(int)_part * Phases + (int)_phase] += now - _since;
        _since = now;
    }

    private static void Exit(byte kind)
    {
        if (!IsProfiling) return;
        Charge();
        if (kind == Scope.PartKind) _part = PartStack[--_partDepth];
        else _phase = PhaseStack[--_phaseDepth];
    }

    /// <summary>Ends a part or phase at <see cref="Dispose"/>; the default value does nothing.</summary>
    public readonly struct Scope : IDisposable
    {
        internal const byte PartKind = 1, PhaseKind = 2;
        private readonly byte _kind;

        internal Scope(byte kind) => _kind = kind;

        public void Dispose()
        {
            if (_kind != 0) Exit(_kind);
        }
    }
}

/// <summary>The seconds of each part and phase of a <see cref="StepProfiler"/> run, and its wall time.</summary>
public sealed class StepProfile
{
    private static readonly int Phases = Enum.GetValues<StepPhase>().Length;
    private readonly double[] _seconds;

    internal StepProfile(double[] seconds, double wallSeconds, int spans = 1)
    {
        _seconds = seconds;
        WallSeconds = wallSeconds;
        Spans = spans;
    }

    /// <summary>How many Start–Stop spans were summed into this profile (a trainer profiles each step as one).</summary>
    public int Spans { get; }

    /// <summary>Seconds between Start and Stop; the cells sum to it.</summary>
    public double WallSeconds { get; }

    public double Seconds(StepPart part, StepPhase phase) => _seconds[(int)part * Phases + (int)phase];

    public double Seconds(StepPart part) => Enum.GetValues<StepPhase>().Sum(phase => Seconds(part, phase));

    public double Seconds(StepPhase phase) => Enum.GetValues<StepPart>().Sum(part => Seconds(part, phase));

    /// <summary>The cell-by-cell sum of two profiles (e.g. of successive steps); null counts as empty.</summary>
    public static StepProfile Sum(StepProfile? a, StepProfile b) =>
        a == null ? b : new StepProfile(a._seconds.Zip(b._seconds, (x, y) => x + y).ToArray(), a.WallSeconds + b.WallSeconds, a.Spans + b.Spans);

    /// <summary>
    /// Each part's seconds per span (per step for a trainer's profile), its share of the total and its seconds per span in
    /// each <see cref="StepPhase"/> (in the enum's order), the largest part first: what the CLI and report.html show.
    /// </summary>
    public IEnumerable<(string Part, double Seconds, double Share, double[] PhaseSeconds)> PerSpan() =>
        Enum.GetValues<StepPart>().OrderByDescending(Seconds).Select(part => (Name(part), Seconds(part) / Spans,
            TotalSeconds > 0 ? Seconds(part) / TotalSeconds : 0, Enum.GetValues<StepPhase>().Select(phase => Seconds(part, phase) / Spans).ToArray()));

    /// <summary>The sum of every cell (equal to <see cref="WallSeconds"/> up to rounding).</summary>
    public double TotalSeconds => _seconds.Sum();

    /// <summary>The part's name in reports: snake case (<c>linear4bit</c>, <c>norms_activations</c>, <c>head_loss</c>).</summary>
    public static string Name(StepPart part) => part switch
    {
        StepPart.NormsActivations => "norms_activations",
        StepPart.HeadLoss => "head_loss",
        _ => part.ToString().ToLowerInvariant(),
    };

    public static string Name(StepPhase phase) => phase.ToString().ToLowerInvariant();
}
