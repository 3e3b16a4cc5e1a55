using System.Diagnostics;

namespace PeftSharp.Kernels;

/// <summary>
/// A small persistent pool for the kernels: <see cref="For"/> hands <c>count</c> work items to the calling
/// thread plus up to <see cref="MaxThreads"/> − 1 workers. Workers spin briefly after a job (so the next one,
/// typically microseconds later in a training step, starts without a kernel wake-up) and then block.
/// A call made while another is running (a nested call from a work item, or a second thread) runs inline.
/// Items are claimed one at a time, so the caller does them all when a worker is slow to start; a worker that has
/// not started by the time the items run out is called off instead of waited for, so a decoding step (dozens of
/// short calls) never waits for a core that another process holds.
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
                var workerError = workers[w].CallOffOrWait();
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
        // The job's state for this worker: Idle, then Signalled by the caller; the worker takes it to Running and back
        // to Idle when its items are done, or the caller takes it from Signalled to CalledOff when it finished them first.
        private const int Idle = 0, Signalled = 1, Running = 2, CalledOff = 3;
        private readonly object _gate = new();
        private int _generation;   // bumped by the caller for each job
        private int _state;
        private Exception? _error;

        public Worker(int index)
        {
            var thread = new Thread(Loop) { IsBackground = true, Name = $"PeftSharp kernel worker {index}" };
            thread.Start();
        }

        public void Signal()
        {
            Volatile.Write(ref _state, Signalled);
            lock (_gate)
            {
                _generation++;
                Monitor.Pulse(_gate);
            }
        }

        /// <summary>
        /// After the caller ran out of items: calls the worker off if it has not started, else waits for it; returns the
        /// exception a work item threw on this worker, if any.
        /// </summary>
        public Exception? CallOffOrWait()
        {
            if (Interlocked.CompareExchange(ref _state, CalledOff, Signalled) == Signalled) return null;
            var spin = new SpinWait();
            while (Volatile.Read(ref _state) != Idle) spin.SpinOnce(sleep1Threshold: -1);
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
                // A job called off before this worker got to it is skipped; the caller has moved on.
                if (Interlocked.CompareExchange(ref _state, Running, Signalled) != Signalled) continue;
                try
                {
                    RunItems();
                }
                catch (Exception e)
                {
                    _error = e;
                }
                Volatile.Write(ref _state, Idle);
            }
        }
    }
}
