using System.Diagnostics;

namespace PeftSharp.Kernels;

/// <summary>
/// A small persistent pool for the kernels: <see cref="For"/> hands <c>count</c> work items to the calling
/// thread plus up to <see cref="MaxThreads"/> − 1 workers. Workers spin briefly after a job (so the next one,
/// typically microseconds later in a training step, starts without a kernel wake-up) and then block.
/// A call made while another is running (a nested call from a work item, or a second thread) runs inline.
/// </summary>
public static unsafe class Parallelism
{
    private static int _maxThreads = Environment.ProcessorCount;

    /// <summary>Most threads (the caller included) one call uses; at least 1. Defaults to the processor count.</summary>
    public static int MaxThreads
    {
        get => _maxThreads;
        set => _maxThreads = Math.Max(1, value);
    }

    private const long SpinTicksPerSecondDivisor = 5000; // spin about 200 µs before blocking

    private static readonly object StartLock = new();
    private static Worker[] _workers = [];
    private static int _busy;

    // The current job; written before any worker is signalled, read only by its participants.
    private static delegate*<int, void*, void> _body;
    private static void* _state;
    private static int _count;
    private static int _next;

    /// <summary>Runs <paramref name="body"/>(i, <paramref name="state"/>) for every i in [0, count) on up to MaxThreads threads; returns when all are done.</summary>
    public static void For(int count, delegate*<int, void*, void> body, void* state)
    {
        int threads = Math.Min(MaxThreads, count);
        if (threads <= 1 || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            for (int i = 0; i < count; i++) body(i, state);
            return;
        }
        try
        {
            var workers = EnsureWorkers(threads - 1);
            _body = body;
            _state = state;
            _count = count;
            Volatile.Write(ref _next, 0);
            for (int w = 0; w < threads - 1; w++) workers[w].Signal();
            Exception? error = null;
            try
            {
                RunItems();
            }
            catch (Exception e)
            {
                error = e;
            }
            for (int w = 0; w < threads - 1; w++)
            {
                var workerError = workers[w].WaitDone();
                error ??= workerError;
            }
            if (error != null) throw new AggregateException("A kernel work item failed.", error);
        }
        finally
        {
            _body = null;
            _state = null;
            Volatile.Write(ref _busy, 0);
        }
    }

    private static void RunItems()
    {
        int count = _count;
        var body = _body;
        void* state = _state;
        for (int i = Interlocked.Increment(ref _next) - 1; i < count; i = Interlocked.Increment(ref _next) - 1)
            body(i, state);
    }

    private static Worker[] EnsureWorkers(int needed)
    {
        var workers = _workers;
        if (workers.Length >= needed) return workers;
        lock (StartLock)
        {
            if (_workers.Length < needed)
            {
                var grown = new Worker[needed];
                Array.Copy(_workers, grown, _workers.Length);
                for (int w = _workers.Length; w < needed; w++) grown[w] = new Worker(w + 1);
                _workers = grown;
            }
            return _workers;
        }
    }

    private sealed class Worker
    {
        private readonly object _gate = new();
        private int _generation;   // bumped by the caller for each job
        private int _completed;    // set by the worker to the generation it finished
        private Exception? _error;

        public Worker(int index)
        {
            var thread = new Thread(Loop) { IsBackground = true, Name = $"PeftSharp kernel worker {index}" };
            thread.Start();
        }

        public void Signal()
        {
            lock (_gate)
            {
                _generation++;
                Monitor.Pulse(_gate);
            }
        }

        /// <summary>Waits for the current job; returns the exception a work item threw on this worker, if any.</summary>
        public Exception? WaitDone()
        {
            int target = Volatile.Read(ref _generation);
            var spin = new SpinWait();
            while (Volatile.Read(ref _completed) != target) spin.SpinOnce(sleep1Threshold: -1);
            var error = _error;
            _error = null;
            return error;
        }

        private void Loop()
        {
            int seen = 0;
            long spinTicks = Stopwatch.Frequency / SpinTicksPerSecondDivisor;
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                while (Volatile.Read(ref _generation) == seen && Stopwatch.GetTimestamp() - start < spinTicks)
                    Thread.SpinWait(20);
                if (Volatile.Read(ref _generation) == seen)
                {
                    lock (_gate)
                        while (_generation == seen) Monitor.Wait(_gate);
                }
                seen = Volatile.Read(ref _generation);
                try
                {
                    RunItems();
                }
                catch (Exception e)
                {
                    _error = e;
                }
                Volatile.Write(ref _completed, seen);
            }
        }
    }
}
