namespace PeftSharp.Training.Distributed;

/// <summary>
/// The processes a run trains on, as the trainer needs them: it all-reduces the target count and the loss of
/// each step, the gradients before clipping (one flat buffer), and lets rank 0 alone write. A single process is
/// <see cref="SingleProcess"/>; an MPI launcher gives one implementation per rank.
/// </summary>
public interface ICommunicator : IDisposable
{
    int Rank { get; }
    int Size { get; }

    /// <summary>Element-wise sum over every rank, in place; every rank gets the same values.</summary>
    void AllReduceSum(Span<double> values);

    /// <summary>Element-wise sum over every rank, in place; every rank gets the same values.</summary>
    void AllReduceSum(Span<float> values);

    /// <summary>The bytes of <paramref name="root"/> copied to every rank (the same length on every rank).</summary>
    void Broadcast(Span<byte> data, int root = 0);
}

/// <summary>One process: every collective is the identity.</summary>
public sealed class SingleProcess : ICommunicator
{
    public static SingleProcess Instance { get; } = new();

    public int Rank => 0;
    public int Size => 1;
    public void AllReduceSum(Span<double> values) { }
    public void AllReduceSum(Span<float> values) { }
    public void Broadcast(Span<byte> data, int root = 0) { }
    public void Dispose() { }
}
