using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace PeftSharp.Training.Distributed;

/// <summary>Thrown on every surviving rank when another rank died, hangs, or left the run.</summary>
public sealed class DistributedFaultException(string message) : PeftSharpException(message);

/// <summary>Timeouts of an <see cref="MpiCommunicator"/> (environment: PEFTSHARP_MPI_HEARTBEAT_TIMEOUT, PEFTSHARP_MPI_TIMEOUT, seconds).</summary>
public sealed record MpiOptions
{
    /// <summary>A rank whose heartbeat is not heard for this long is declared dead or stopped (default 10 s).</summary>
    public double HeartbeatTimeoutSeconds { get; init; } = 10;

    /// <summary>The longest one collective may wait while every rank still beats (a rank alive but stuck; default 1800 s; 0: none).</summary>
    public double CollectiveTimeoutSeconds { get; init; } = 1800;

    public static MpiOptions FromEnvironment(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var o = new MpiOptions();
        if (double.TryParse(environment("PEFTSHARP_MPI_HEARTBEAT_TIMEOUT"), CultureInfo.InvariantCulture, out double h) && h > 0) o = o with { HeartbeatTimeoutSeconds = h };
        if (double.TryParse(environment("PEFTSHARP_MPI_TIMEOUT"), CultureInfo.InvariantCulture, out double c) && c >= 0) o = o with { CollectiveTimeoutSeconds = c };
        return o;
    }
}

/// <summary>
/// <see cref="ICommunicator"/> over MPI (MPI_COMM_WORLD). Every collective is non-blocking (MPI_Iallreduce, MPI_Ibcast)
/// and waited on by polling, so a wait can give up: a heartbeat thread exchanges a small message with every other rank on
/// a duplicate communicator (MPI_THREAD_MULTIPLE), and a rank that is not heard for <see cref="MpiOptions.HeartbeatTimeoutSeconds"/>
/// (killed, stopped, its machine gone) or that announced it left (an error on that rank) ends the wait with a
/// <see cref="DistributedFaultException"/> naming it. A fault ends the job with MPI_Abort after the message is printed, so
/// no rank is left waiting; checkpoints are written whole by rank 0 (temp file + rename), so the last one stays usable.
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    private const int MaxCount = 1 << 30;
    private const int HeartbeatTag = 17;
    private const long PhaseTraining = 0, PhaseLeaving = 1;

    private readonly MpiNative _mpi;
    private readonly MpiOptions _options;
    private readonly nint _heartbeatComm, _shutdownComm;
    private readonly Thread? _heartbeat;
    private volatile bool _stopHeartbeat;
    private volatile string? _failure;
    private volatile bool _peerSilent;   // a rank died or hangs: the job ends with MPI_Abort
    private readonly long[] _lastHeard;   // Stopwatch ticks, per rank
    private readonly long[] _peerPhase;   // what each rank last announced
    private readonly long[] _leftAt;      // when a rank was first seen leaving
    private long _myPhase = PhaseTraining;
    private long _heartbeatTick;          // when the heartbeat loop last ran (Stopwatch ticks)
    private readonly (string Action, int Rank, long Call)? _fault;
    private long _calls;
    private long _bytes, _waitTicks;
    private bool _disposed;
    private readonly string[] _hosts;

    public int Rank { get; }
    public int Size { get; }
    public string Host { get; }
    public string Library { get; }
    public bool HasHeartbeat => _heartbeat != null;

    /// <summary>Collectives this rank has run, the bytes it contributed, and the seconds it spent in them (transfer and waiting for slower ranks).</summary>
    public (long Collectives, long Bytes, double Seconds) Statistics => (_calls, _bytes, (double)_waitTicks / Stopwatch.Frequency);

    private MpiCommunicator(MpiNative mpi, MpiOptions options)
    {
        _mpi = mpi;
        _options = options;
        int initialized = 0;
        Check(mpi.Initialized(&initialized), "MPI_Initialized");
        int provided = 0;
        if (initialized == 0) Check(mpi.InitThread(null, null, MpiNative.ThreadMultiple, &provided), "MPI_Init_thread");
        else provided = MpiNative.ThreadMultiple;
        Check(mpi.CommSetErrhandler(mpi.CommWorld, mpi.ErrorsReturn), "MPI_Comm_set_errhandler");
        int rank = 0, size = 0;
        Check(mpi.CommRank(mpi.CommWorld, &rank), "MPI_Comm_rank");
        Check(mpi.CommSize(mpi.CommWorld, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        Host = mpi.ProcessorName();
        Library = (mpi.IsOpenMpi ? "Open MPI ABI: " : "MPICH ABI: ") + mpi.LibraryVersion();
        nint hb = 0, sd = 0;
        Check(mpi.CommDup(mpi.CommWorld, &hb), "MPI_Comm_dup");
        Check(mpi.CommDup(mpi.CommWorld, &sd), "MPI_Comm_dup");
        _heartbeatComm = hb;
        _shutdownComm = sd;
        _lastHeard = new long[size];
        _peerPhase = new long[size];
        _leftAt = new long[size];
        _hosts = new string[size];
        _fault = ParseFault(Environment.GetEnvironmentVariable("PEFTSHARP_MPI_FAULT"));
        // Every rank learns every rank's host (for messages): one byte broadcast per rank at start.
        for (int r = 0; r < size; r++)
        {
            var name = new byte[256];
            if (r == rank) System.Text.Encoding.ASCII.GetBytes(Host.Length > 255 ? Host[..255] : Host).CopyTo(name, 0);
            Broadcast(name, r);
            _hosts[r] = System.Text.Encoding.ASCII.GetString(name).TrimEnd('\0');
        }
        if (provided >= MpiNative.ThreadMultiple && size > 1)
        {
            long now = Stopwatch.GetTimestamp();
            Array.Fill(_lastHeard, now);
            _heartbeat = new Thread(HeartbeatLoop) { IsBackground = true, Name = "peftsharp-mpi-heartbeat" };
            _heartbeat.Start();
        }
    }

    /// <summary>Initializes MPI (the launcher's library) and joins MPI_COMM_WORLD.</summary>
    public static MpiCommunicator Initialize(MpiOptions? options = null) => new(MpiNative.Load(), options ?? MpiOptions.FromEnvironment());

    public void AllReduceSum(Span<double> values)
    {
        fixed (double* p = values)
            for (int o = 0; o < values.Length; o += MaxCount)
                AllReduce(p + o, Math.Min(MaxCount, values.Length - o), _mpi.Double, "all-reduce");
    }

    public void AllReduceSum(Span<float> values)
    {
        fixed (float* p = values)
            for (int o = 0; o < values.Length; o += MaxCount)
                AllReduce(p + o, Math.Min(MaxCount, values.Length - o), _mpi.Float, "all-reduce");
    }

    public void Broadcast(Span<byte> data, int root = 0)
    {
        fixed (byte* p = data)
            for (int o = 0; o < data.Length; o += MaxCount)
            {
                BeforeCollective();
                nint request = 0;
                _bytes += Math.Min(MaxCount, data.Length - o);
                Check(_mpi.Ibcast(p + o, Math.Min(MaxCount, data.Length - o), _mpi.Byte, root, _mpi.CommWorld, &request), "MPI_Ibcast");
                Wait(ref request, "broadcast");
            }
    }

    private void AllReduce(void* buffer, int count, nint type, string what)
    {
        BeforeCollective();
        nint request = 0;
        _bytes += (long)count * (type == _mpi.Double ? 8 : 4);
        Check(_mpi.Iallreduce(_mpi.InPlace, buffer, count, type, _mpi.Sum, _mpi.CommWorld, &request), "MPI_Iallreduce");
        Wait(ref request, what);
    }

    private void BeforeCollective()
    {
        if (_failure != null) throw new DistributedFaultException(_failure);
        long call = ++_calls;
        if (_fault is { } f && f.Rank == Rank && f.Call == call)
        {
            // Test hook (PEFTSHARP_MPI_FAULT=kill|stop|throw:RANK:CALL): this rank dies, freezes or fails at its CALL-th collective.
            Console.Error.WriteLine($"PEFTSHARP_MPI_FAULT: rank {Rank} {f.Action} at collective {call}");
            Console.Error.Flush();
            if (f.Action == "throw") throw new PeftSharpException($"PEFTSHARP_MPI_FAULT: an error on rank {Rank} alone.");
            Kill(Environment.ProcessId, f.Action == "stop" ? 19 : 9);
        }
    }

    [DllImport("libc.so.6", EntryPoint = "kill")]
    private static extern int Kill(int pid, int signal);

    private static (string, int, long)? ParseFault(string? spec)
    {
        var parts = spec?.Split(':');
        if (parts is not { Length: 3 } || parts[0] is not ("kill" or "stop" or "throw")) return null;
        return int.TryParse(parts[1], out int r) && long.TryParse(parts[2], out long c) ? (parts[0], r, c) : null;
    }

    /// <summary>Polls a request until it completes, a peer is declared dead or gone, or the collective timeout passes.</summary>
    private void Wait(ref nint request, string what)
    {
        long start = Stopwatch.GetTimestamp();
        var status = stackalloc byte[64];
        for (int spin = 0; ; spin++)
        {
            int flag = 0;
            fixed (nint* r = &request) Check(_mpi.Test(r, &flag, status), "MPI_Test");
            if (flag != 0)
            {
                _waitTicks += Stopwatch.GetTimestamp() - start;
                return;
            }
            if (_failure == null) CheckPeers();
            if (_failure != null) throw new DistributedFaultException(_failure);
            double waited = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (_options.CollectiveTimeoutSeconds > 0 && waited > _options.CollectiveTimeoutSeconds)
            {
                _peerSilent = true;
                _failure = $"distributed: rank {Rank} waited {waited:F0} s in a {what} that the other ranks did not join (every rank still answers: one is stuck). " +
                    $"Stopping the run; {ResumeAdvice}";
                throw new DistributedFaultException(_failure);
            }
            if (spin < 2000) Thread.SpinWait(50);
            else if (spin < 4000) Thread.Yield();
            else Thread.Sleep(1);
        }
    }

    private const string ResumeAdvice = "checkpoints are written whole by rank 0, so the last one is intact: resume with training.resume_from_checkpoint: true.";

    private string Who(int r) => $"rank {r} (host {_hosts[r]})";

    /// <summary>A peer not heard for the heartbeat timeout, or gone for two seconds (its collectives cannot come), is a fault.</summary>
    private void CheckPeers()
    {
        if (_heartbeat == null) return;
        long now = Stopwatch.GetTimestamp();
        // Silence means something only while this process's own heartbeat thread runs: if it has not run for a while
        // (this machine overloaded, a long GC pause), what it last heard is stale and nothing is concluded.
        if (Stopwatch.GetElapsedTime(Volatile.Read(ref _heartbeatTick), now).TotalSeconds > Math.Min(1.0, _options.HeartbeatTimeoutSeconds / 4)) return;
        for (int r = 0; r < Size; r++)
        {
            if (r == Rank) continue;
            double silent = Stopwatch.GetElapsedTime(Volatile.Read(ref _lastHeard[r]), now).TotalSeconds;
            if (silent > _options.HeartbeatTimeoutSeconds)
            {
                _peerSilent = true;
                _failure = $"distributed: {Who(r)} has not answered for {silent:F1} s (it died, was stopped, or its machine is unreachable); " +
                    $"rank {Rank} stops the run. {ResumeAdvice}";
                return;
            }
            long left = Volatile.Read(ref _leftAt[r]);
            if (Volatile.Read(ref _myPhase) == PhaseTraining && left != 0 && Stopwatch.GetElapsedTime(left, now).TotalSeconds > 2)
            {
                _failure = $"distributed: {Who(r)} left the run (it stopped with an error: see its output); rank {Rank} stops too. {ResumeAdvice}";
                return;
            }
        }
    }

    private void HeartbeatLoop()
    {
        int n = Size;
        var sendBuffers = (long*)NativeMemory.AllocZeroed((nuint)(n * sizeof(long)));
        var receiveBuffers = (long*)NativeMemory.AllocZeroed((nuint)(n * sizeof(long)));
        var sends = new nint[n];
        var receives = new nint[n];
        var status = stackalloc byte[64];
        int interval = (int)Math.Clamp(_options.HeartbeatTimeoutSeconds * 1000 / 10, 20, 1000);
        try
        {
            for (int r = 0; r < n; r++)
                if (r != Rank)
                    fixed (nint* q = &receives[r]) _mpi.Irecv(receiveBuffers + r, sizeof(long), _mpi.Byte, r, HeartbeatTag, _heartbeatComm, q);
            Volatile.Write(ref _heartbeatTick, Stopwatch.GetTimestamp());
            while (!_stopHeartbeat)
            {
                long started = Stopwatch.GetTimestamp();
                if (Stopwatch.GetElapsedTime(Volatile.Read(ref _heartbeatTick), started).TotalSeconds > _options.HeartbeatTimeoutSeconds / 2)
                    // This thread itself was not scheduled for a long time: give every peer a fresh start rather than blame it.
                    for (int r = 0; r < n; r++) Volatile.Write(ref _lastHeard[r], started);
                for (int r = 0; r < n; r++)
                {
                    if (r == Rank) continue;
                    int flag = 1;
                    fixed (nint* q = &sends[r])
                    {
                        if (*q != 0) _mpi.Test(q, &flag, status);
                        if (flag != 0)
                        {
                            sendBuffers[r] = Volatile.Read(ref _myPhase);
                            *q = 0;
                            _mpi.Isend(sendBuffers + r, sizeof(long), _mpi.Byte, r, HeartbeatTag, _heartbeatComm, q);
                        }
                    }
                    fixed (nint* q = &receives[r])
                        for (int drained = 0; drained < 64; drained++)
                        {
                            flag = 0;
                            if (_mpi.Test(q, &flag, status) != MpiNative.Success || flag == 0) break;
                            long now = Stopwatch.GetTimestamp();
                            Volatile.Write(ref _lastHeard[r], now);
                            long phase = receiveBuffers[r];
                            Volatile.Write(ref _peerPhase[r], phase);
                            if (phase == PhaseLeaving && Volatile.Read(ref _leftAt[r]) == 0) Volatile.Write(ref _leftAt[r], now);
                            *q = 0;
                            _mpi.Irecv(receiveBuffers + r, sizeof(long), _mpi.Byte, r, HeartbeatTag, _heartbeatComm, q);
                        }
                }
                Volatile.Write(ref _heartbeatTick, Stopwatch.GetTimestamp());
                if (_failure == null) CheckPeers();
                Thread.Sleep(interval);
            }
            // Outstanding receives are cancelled; sends to live peers have completed or will be dropped at MPI_Finalize.
            for (int r = 0; r < n; r++)
                if (r != Rank)
                    fixed (nint* q = &receives[r])
                    {
                        _mpi.Cancel(q);
                        int flag = 0;
                        for (int i = 0; i < 1000 && flag == 0; i++) { _mpi.Test(q, &flag, status); if (flag == 0) Thread.Sleep(1); }
                    }
        }
        finally
        {
            // Buffers of a send still pending must outlive it: freed only when nothing can still write them (the process ends).
            bool pending = sends.Any(s => s != 0);
            if (!pending) NativeMemory.Free(sendBuffers);
            NativeMemory.Free(receiveBuffers);
        }
    }

    /// <summary>
    /// Leaves the run. When every rank arrives (a normal end, or an error every rank saw), MPI is finalized; when another
    /// rank died or is stuck, this rank's message is printed and MPI_Abort ends the job, so no rank waits forever.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Volatile.Write(ref _myPhase, PhaseLeaving);
        if (Environment.GetEnvironmentVariable("PEFTSHARP_MPI_STATS") is "1")
        {
            var (calls, bytes, seconds) = Statistics;
            Console.Error.WriteLine($"mpi rank {Rank}/{Size} ({Host}, {Kernels.Parallelism.MaxThreads} threads): {calls} collectives, " +
                $"{bytes / 1048576.0:F2} MiB contributed, {seconds:F3} s in collectives");
        }
        string? failure = _failure;
        if (!_peerSilent)
        {
            // Every rank announces it is leaving and meets the others on a communicator of its own: a rank stopped by an
            // error of its own gets here while the others wait in a training collective; they see it leave, fail that
            // collective with a message naming it, and come here too. Then MPI ends normally on every rank.
            try
            {
                double one = 1;
                nint request = 0;
                Check(_mpi.Iallreduce(_mpi.InPlace, &one, 1, _mpi.Double, _mpi.Sum, _shutdownComm, &request), "MPI_Iallreduce");
                WaitShutdown(ref request);
            }
            catch (PeftSharpException e)
            {
                failure = e.Message;
                _peerSilent = true;
            }
        }
        _stopHeartbeat = true;
        _heartbeat?.Join();
        if (_peerSilent)
        {
            // A rank is dead or stuck: finalizing would wait for it. Say why, then end the whole job.
            Console.Error.WriteLine(failure);
            Console.Error.Flush();
            Console.Out.Flush();
            _mpi.Abort(_mpi.CommWorld, 1);
        }
        _mpi.Finalize();
    }

    private void WaitShutdown(ref nint request)
    {
        var status = stackalloc byte[64];
        long start = Stopwatch.GetTimestamp();
        while (true)
        {
            int flag = 0;
            fixed (nint* r = &request) Check(_mpi.Test(r, &flag, status), "MPI_Test");
            if (flag != 0) return;
            // Leaving ranks are expected to be gone: only silence is a fault here.
            long now = Stopwatch.GetTimestamp();
            if (_heartbeat != null && Stopwatch.GetElapsedTime(Volatile.Read(ref _heartbeatTick), now).TotalSeconds <= Math.Min(1.0, _options.HeartbeatTimeoutSeconds / 4))
            {
                for (int r = 0; r < Size; r++)
                    if (r != Rank && Stopwatch.GetElapsedTime(Volatile.Read(ref _lastHeard[r]), now).TotalSeconds > _options.HeartbeatTimeoutSeconds)
                        throw new DistributedFaultException($"distributed: {Who(r)} stopped answering while the run ended; rank {Rank} ends the job. {ResumeAdvice}");
            }
            if (_options.CollectiveTimeoutSeconds > 0 && Stopwatch.GetElapsedTime(start).TotalSeconds > _options.CollectiveTimeoutSeconds)
                throw new DistributedFaultException($"distributed: rank {Rank} waited {_options.CollectiveTimeoutSeconds:F0} s for the other ranks to finish; ending the job.");
            Thread.Sleep(1);
        }
    }

    private void Check(int code, string function)
    {
        if (code == MpiNative.Success) return;
        _peerSilent = true;
        _failure ??= $"distributed: {function} failed on rank {Rank}: {_mpi.Describe(code)} (another rank may have died). {ResumeAdvice}";
        throw new DistributedFaultException(_failure);
    }
}
