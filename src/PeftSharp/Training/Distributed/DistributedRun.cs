using System.Security.Cryptography;
using System.Text;

namespace PeftSharp.Training.Distributed;

/// <summary>
/// Starting a run on every rank: the communicator the launcher asks for (none when there is no launcher), the kernel
/// threads of each rank, and a check that every rank was given the same run (config, model files, data files).
/// </summary>
public static class DistributedRun
{
    /// <summary>Files up to this size are hashed whole; larger ones by their length, first and last 8 MiB and 32 strided 1 MiB blocks.</summary>
    public const long WholeFileHashLimit = 256L << 20;

    /// <summary>
    /// <see cref="SingleProcess.Instance"/> when no launcher started this process (MPI is not loaded: nothing changes
    /// from a plain run); else an <see cref="MpiCommunicator"/> on MPI_COMM_WORLD, with the kernel threads set to the
    /// cores this rank was given (<see cref="MpiLauncher.ApplyThreadsPerRank"/>).
    /// </summary>
    public static ICommunicator Start(Func<string, string?>? environment = null)
    {
        if (!MpiLauncher.IsLaunched(environment)) return SingleProcess.Instance;
        MpiLauncher.ApplyThreadsPerRank(environment);
        return MpiCommunicator.Initialize(MpiOptions.FromEnvironment(environment));
    }

    /// <summary>Set to 0 to keep AdamW's whole state on every rank in full fine-tuning (ZeRO-1 is on by default there).</summary>
    public const string ZeroVariable = "PEFTSHARP_ZERO";

    /// <summary>Whether a run shards its optimizer state (ZeRO-1): full fine-tuning, unless PEFTSHARP_ZERO=0.</summary>
    public static bool ShardOptimizerState(bool fullFineTuning, Func<string, string?>? environment = null) =>
        fullFineTuning && (environment ?? Environment.GetEnvironmentVariable)(ZeroVariable) is not "0";

    /// <summary>
    /// SHA-256 of the run as this rank sees it: the effective config text and each file's name, length and contents
    /// (files above <see cref="WholeFileHashLimit"/> sampled; folders by their files, sorted).
    /// </summary>
    public static byte[] Fingerprint(string configText, IEnumerable<string?> paths)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes(configText));
        var files = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var path in paths)
        {
            if (string.IsNullOrEmpty(path)) continue;
            if (File.Exists(path)) files.Add(Path.GetFullPath(path));
            else if (Directory.Exists(path))
                foreach (var f in Directory.EnumerateFiles(path, "*", SearchOption.TopDirectoryOnly)) files.Add(Path.GetFullPath(f));
        }
        var buffer = new byte[1 << 20];
        foreach (var file in files)
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16);
            long length = stream.Length;
            hash.AppendData(Encoding.UTF8.GetBytes($"\0{Path.GetFileName(file)}\0{length}\0"));
            if (length <= WholeFileHashLimit)
            {
                int n;
                while ((n = stream.Read(buffer)) > 0) hash.AppendData(buffer, 0, n);
                continue;
            }
            void Block(long offset, long count)
            {
                stream.Position = offset;
                for (long left = count; left > 0;)
                {
                    int n = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                    if (n <= 0) break;
                    hash.AppendData(buffer, 0, n);
                    left -= n;
                }
            }
            Block(0, 8 << 20);
            for (int i = 1; i <= 32; i++) Block(length / 33 * i, 1 << 20);
            Block(length - (8 << 20), 8 << 20);
        }
        return hash.GetHashAndReset();
    }

    /// <summary>
    /// Collective: every rank's trainable parameters must be the same bits (the all-reduce gives every rank the same sum, so
    /// they only differ after a bug or a broken reduction). Checked when a checkpoint is saved: a 64-bit hash of every
    /// parameter's bytes on rank 0 is compared on every rank, and all stop with the same message naming the ranks that differ.
    /// </summary>
    public static unsafe void CheckReplicas(ICommunicator comm, IEnumerable<Tensors.Parameter> parameters, int step)
    {
        if (comm.Size == 1) return;
        ulong hash = 14695981039346656037UL;
        foreach (var p in parameters)
        {
            var words = new ReadOnlySpan<uint>(p.Data, checked((int)p.Length));
            foreach (uint w in words) hash = (hash ^ w) * 1099511628211UL;
        }
        var mine = BitConverter.GetBytes(hash);
        var root = (byte[])mine.Clone();
        comm.Broadcast(root, 0);
        var differs = new double[comm.Size];
        differs[comm.Rank] = root.AsSpan().SequenceEqual(mine) ? 0 : 1;
        comm.AllReduceSum(differs);
        var ranks = Enumerable.Range(0, comm.Size).Where(r => differs[r] != 0).ToList();
        if (ranks.Count > 0)
            throw new PeftSharpException($"distributed: at step {step} the trainable parameters of rank{(ranks.Count > 1 ? "s" : "")} {string.Join(", ", ranks)} " +
                "differ from rank 0's: the replicas have diverged (a broken all-reduce or a bug), so the run stops before saving.");
    }

    /// <summary>
    /// Rank 0 broadcasts its fingerprint; every rank compares and the ranks that differ are named on every rank (each
    /// throws the same <see cref="PeftSharpException"/>, so all stop together). A single process computes nothing.
    /// </summary>
    public static void CheckSameRun(ICommunicator comm, Func<byte[]> fingerprintOf, string what)
    {
        if (comm.Size == 1) return;
        var fingerprint = fingerprintOf();
        var root = (byte[])fingerprint.Clone();
        comm.Broadcast(root, 0);
        var differs = new double[comm.Size];
        differs[comm.Rank] = root.AsSpan().SequenceEqual(fingerprint) ? 0 : 1;
        comm.AllReduceSum(differs);
        var ranks = Enumerable.Range(0, comm.Size).Where(r => differs[r] != 0).ToList();
        if (ranks.Count > 0)
            throw new PeftSharpException($"distributed: rank{(ranks.Count > 1 ? "s" : "")} {string.Join(", ", ranks)} of {comm.Size} " +
                $"{(ranks.Count > 1 ? "were" : "was")} given a different run than rank 0 ({what} differ). Every rank must read the same config, " +
                "model files and data: copy them to the same paths on every machine (or use a shared file system).");
    }
}
