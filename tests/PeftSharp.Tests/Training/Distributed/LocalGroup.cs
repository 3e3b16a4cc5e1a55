using PeftSharp.Training.Distributed;

namespace PeftSharp.Tests.Training.Distributed;

/// <summary>
/// N ranks as threads of this process, for tests of the trainer's distribution logic without a launcher: sums are taken
/// in rank order (so every rank gets the same bits), a broadcast copies root's bytes; a barrier separates the phases.
/// </summary>
internal sealed class LocalGroup
{
    private readonly Barrier _barrier;
    private readonly object?[] _slots;

    private LocalGroup(int size)
    {
        _barrier = new Barrier(size);
        _slots = new object?[size];
    }

    public static ICommunicator[] Create(int size)
    {
        var group = new LocalGroup(size);
        return Enumerable.Range(0, size).Select(r => (ICommunicator)new Member(group, r, size)).ToArray();
    }

    /// <summary>Runs body(rank) on one thread per rank and rethrows the first failure.</summary>
    public static void Run(int size, Action<ICommunicator> body)
    {
        var comms = Create(size);
        var errors = new Exception?[size];
        var threads = comms.Select((c, r) => new Thread(() =>
        {
            try { body(c); }
            catch (Exception e) { errors[r] = e; }
        }, 64 << 20)).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a rank thread hung");
        if (errors.FirstOrDefault(e => e != null) is { } error) throw new AggregateException(error);
    }

    private sealed class Member(LocalGroup group, int rank, int size) : ICommunicator
    {
        public int Rank => rank;
        public int Size => size;

        private void Sum<T>(Span<T> values) where T : struct, System.Numerics.INumber<T>
        {
            group._slots[rank] = values.ToArray();
            group._barrier.SignalAndWait();
            for (int i = 0; i < values.Length; i++)
            {
                T s = T.Zero;
                for (int r = 0; r < size; r++) s += ((T[])group._slots[r]!)[i];
                values[i] = s;
            }
            group._barrier.SignalAndWait();
        }

        public void AllReduceSum(Span<double> values) => Sum(values);
        public void AllReduceSum(Span<float> values) => Sum(values);

        public void Broadcast(Span<byte> data, int root = 0)
        {
            if (rank == root) group._slots[root] = data.ToArray();
            group._barrier.SignalAndWait();
            if (rank != root) ((byte[])group._slots[root]!).CopyTo(data);
            group._barrier.SignalAndWait();
        }

        public void Dispose() { }
    }
}
