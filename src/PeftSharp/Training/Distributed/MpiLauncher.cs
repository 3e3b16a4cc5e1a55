using PeftSharp.Kernels;

namespace PeftSharp.Training.Distributed;

/// <summary>
/// What an MPI launcher (Open MPI's mpirun/prterun, MPICH's hydra mpiexec, Slurm's srun with PMI/PMIx) tells a
/// process through its environment, read without loading any MPI library: a run not started by a launcher never
/// touches MPI, and the library is needed only on machines that run under one.
/// </summary>
public static class MpiLauncher
{
    /// <summary>Environment variables a launcher sets: world size, rank and ranks on this node, in the order tried.</summary>
    private static readonly string[] SizeVariables = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS_WORLD", "SLURM_NTASKS"];
    private static readonly string[] RankVariables = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"];
    private static readonly string[] LocalSizeVariables = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"];

    /// <summary>Set to "0", "off" or "false" to run as a single process even under a launcher.</summary>
    public const string DisableVariable = "PEFTSHARP_MPI";

    /// <summary>Kernel threads per rank, overriding the default (the cores given to the rank).</summary>
    public const string ThreadsVariable = "PEFTSHARP_THREADS";

    /// <summary>True when a launcher started this process as one of several ranks (and PEFTSHARP_MPI does not turn MPI off).</summary>
    public static bool IsLaunched(Func<string, string?>? environment = null) => WorldSize(environment) > 1 && !Disabled(environment);

    /// <summary>The world size the launcher announced (1 when none did).</summary>
    public static int WorldSize(Func<string, string?>? environment = null) => First(SizeVariables, environment) ?? 1;

    /// <summary>This process's rank as the launcher announced it (0 when none did): known before MPI is initialized.</summary>
    public static int Rank(Func<string, string?>? environment = null) => IsLaunched(environment) ? First(RankVariables, environment) ?? 0 : 0;

    /// <summary>Ranks on this node (1 when unknown).</summary>
    public static int LocalSize(Func<string, string?>? environment = null) => First(LocalSizeVariables, environment) ?? 1;

    private static bool Disabled(Func<string, string?>? environment)
    {
        string? v = (environment ?? Environment.GetEnvironmentVariable)(DisableVariable);
        return v is "0" or "off" or "false" or "OFF" or "False";
    }

    private static int? First(string[] names, Func<string, string?>? environment)
    {
        environment ??= Environment.GetEnvironmentVariable;
        foreach (var name in names)
            if (int.TryParse(environment(name), out int value) && value >= 0) return value;
        return null;
    }

    /// <summary>
    /// Kernel threads for this rank: PEFTSHARP_THREADS when set; else the cores this process may run on
    /// (<see cref="Environment.ProcessorCount"/> follows the affinity mask a launcher's --bind-to sets and the cgroup's
    /// quota), divided among the ranks of this node when they were not bound (each then sees every core).
    /// </summary>
    public static int ThreadsPerRank(int availableCores, int machineCores, int localRanks, string? overrideValue)
    {
        if (int.TryParse(overrideValue, out int forced) && forced > 0) return forced;
        if (localRanks > 1 && availableCores >= machineCores) return Math.Max(1, availableCores / localRanks);
        return Math.Max(1, availableCores);
    }

    /// <summary>Sets <see cref="Parallelism.MaxThreads"/> for this rank (see <see cref="ThreadsPerRank"/>); returns it.</summary>
    public static int ApplyThreadsPerRank(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        int machine = MachineCores();
        int threads = ThreadsPerRank(Environment.ProcessorCount, machine, LocalSize(environment), environment(ThreadsVariable));
        Parallelism.MaxThreads = threads;
        return threads;
    }

    /// <summary>Online CPUs of the machine, whatever this process's affinity (from /sys; the processor count elsewhere).</summary>
    private static int MachineCores()
    {
        try
        {
            string online = File.ReadAllText("/sys/devices/system/cpu/online").Trim();
            int count = 0;
            foreach (var part in online.Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                var ends = part.Split('-');
                count += ends.Length == 2 ? int.Parse(ends[1]) - int.Parse(ends[0]) + 1 : 1;
            }
            return Math.Max(1, count);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return Environment.ProcessorCount;
        }
    }
}
