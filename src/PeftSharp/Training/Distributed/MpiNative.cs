using System.Runtime.InteropServices;

namespace PeftSharp.Training.Distributed;

/// <summary>
/// The MPI C library, opened at run time (dlopen) and called through function pointers: the dozen functions the
/// trainer needs, for both ABIs in use. Open MPI's handles are addresses of exported objects (ompi_mpi_comm_world,
/// ompi_mpi_float, ...); MPICH's ABI (MPICH, Intel MPI, MVAPICH, Cray MPICH) uses fixed integers. Both are carried as
/// <c>nint</c> (an int handle widened: the callee reads its low 32 bits, and an int written into a zeroed nint reads back
/// the same on little-endian machines); MPI_Status is never read (a 64-byte scratch stands in for it); counts are ints, so
/// large buffers go in pieces. Nothing here runs unless a launcher started the process (<see cref="MpiLauncher"/>).
/// </summary>
internal sealed unsafe class MpiNative
{
    public const int Success = 0, ThreadMultiple = 3;

    /// <summary>Library names tried in order (PEFTSHARP_MPI_LIBRARY first when set).</summary>
    public static readonly string[] OpenMpiNames = ["libmpi.so.40", "libmpi.so"];
    public static readonly string[] MpichNames = ["libmpi.so.12", "libmpich.so.12", "libmpi.so"];

    public string Path { get; }
    public bool IsOpenMpi { get; }
    public nint CommWorld { get; }
    public nint Float { get; }
    public nint Double { get; }
    public nint Byte { get; }
    public nint Sum { get; }
    public nint ErrorsReturn { get; }
    public void* InPlace { get; }

    public readonly delegate* unmanaged<int*, int> Initialized;
    public readonly delegate* unmanaged<int*, int> Finalized;
    public readonly delegate* unmanaged<int*, byte***, int, int*, int> InitThread;
    public readonly delegate* unmanaged<int> Finalize;
    public readonly delegate* unmanaged<nint, int, int> Abort;
    public readonly delegate* unmanaged<nint, int*, int> CommRank;
    public readonly delegate* unmanaged<nint, int*, int> CommSize;
    public readonly delegate* unmanaged<nint, nint*, int> CommDup;
    public readonly delegate* unmanaged<nint, nint, int> CommSetErrhandler;
    public readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int> Iallreduce;
    public readonly delegate* unmanaged<void*, int, nint, int, nint, nint*, int> Ibcast;
    public readonly delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int> Isend;
    public readonly delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int> Irecv;
    public readonly delegate* unmanaged<nint*, int*, void*, int> Test;
    public readonly delegate* unmanaged<nint*, int> Cancel;
    public readonly delegate* unmanaged<nint*, int> RequestFree;
    public readonly delegate* unmanaged<byte*, int*, int> GetProcessorName;
    public readonly delegate* unmanaged<byte*, int*, int> GetLibraryVersion;
    public readonly delegate* unmanaged<int, byte*, int*, int> ErrorString;

    private MpiNative(string path, nint handle)
    {
        Path = path;
        IsOpenMpi = NativeLibrary.TryGetExport(handle, "ompi_mpi_comm_world", out nint world);
        if (IsOpenMpi)
        {
            CommWorld = world;
            Float = Export(handle, "ompi_mpi_float");
            Double = Export(handle, "ompi_mpi_double");
            Byte = Export(handle, "ompi_mpi_byte");
            Sum = Export(handle, "ompi_mpi_op_sum");
            ErrorsReturn = Export(handle, "ompi_mpi_errors_return");
            InPlace = (void*)1;
        }
        else
        {
            // mpi.h of MPICH 3.x/4.x (the MPICH ABI initiative: libmpi.so.12).
            CommWorld = 0x44000000;
            Float = 0x4c00040a;
            Double = 0x4c00080b;
            Byte = 0x4c00010d;
            Sum = 0x58000003;
            ErrorsReturn = 0x54000001;
            InPlace = (void*)-1;
        }
        Initialized = (delegate* unmanaged<int*, int>)Export(handle, "MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Export(handle, "MPI_Finalized");
        InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Export(handle, "MPI_Init_thread");
        Finalize = (delegate* unmanaged<int>)Export(handle, "MPI_Finalize");
        Abort = (delegate* unmanaged<nint, int, int>)Export(handle, "MPI_Abort");
        CommRank = (delegate* unmanaged<nint, int*, int>)Export(handle, "MPI_Comm_rank");
        CommSize = (delegate* unmanaged<nint, int*, int>)Export(handle, "MPI_Comm_size");
        CommDup = (delegate* unmanaged<nint, nint*, int>)Export(handle, "MPI_Comm_dup");
        CommSetErrhandler = (delegate* unmanaged<nint, nint, int>)Export(handle, "MPI_Comm_set_errhandler");
        Iallreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int>)Export(handle, "MPI_Iallreduce");
        Ibcast = (delegate* unmanaged<void*, int, nint, int, nint, nint*, int>)Export(handle, "MPI_Ibcast");
        Isend = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)Export(handle, "MPI_Isend");
        Irecv = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)Export(handle, "MPI_Irecv");
        Test = (delegate* unmanaged<nint*, int*, void*, int>)Export(handle, "MPI_Test");
        Cancel = (delegate* unmanaged<nint*, int>)Export(handle, "MPI_Cancel");
        RequestFree = (delegate* unmanaged<nint*, int>)Export(handle, "MPI_Request_free");
        GetProcessorName = (delegate* unmanaged<byte*, int*, int>)Export(handle, "MPI_Get_processor_name");
        GetLibraryVersion = (delegate* unmanaged<byte*, int*, int>)Export(handle, "MPI_Get_library_version");
        ErrorString = (delegate* unmanaged<int, byte*, int*, int>)Export(handle, "MPI_Error_string");
    }

    private static nint Export(nint handle, string name) =>
        NativeLibrary.TryGetExport(handle, name, out nint address) ? address
            : throw new PeftSharpException($"distributed: the MPI library has no symbol {name}; it is not an MPI-3 library.");

    [DllImport("libc.so.6", EntryPoint = "dlopen")]
    private static extern nint DlOpen(string file, int mode);

    [DllImport("libc.so.6", EntryPoint = "dlerror")]
    private static extern nint DlError();

    private const int RtldNow = 2, RtldGlobal = 0x100;

    /// <summary>
    /// Opens the MPI library of the launcher that started this process: PEFTSHARP_MPI_LIBRARY when set, else Open MPI's
    /// libmpi.so.40 under mpirun/prterun (OMPI_* variables) and the MPICH ABI's libmpi.so.12 under hydra (PMI_*), the other
    /// one next. RTLD_GLOBAL, because Open MPI's plugins (mca_*.so) resolve libmpi's symbols from the global scope.
    /// </summary>
    public static MpiNative Load(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var names = new List<string>();
        if (environment("PEFTSHARP_MPI_LIBRARY") is { Length: > 0 } forced) names.Add(forced);
        bool openMpi = environment("OMPI_COMM_WORLD_SIZE") != null;
        names.AddRange(openMpi ? [.. OpenMpiNames, .. MpichNames] : [.. MpichNames, .. OpenMpiNames]);
        var errors = new List<string>();
        foreach (var name in names.Distinct())
        {
            nint handle = DlOpen(name, RtldNow | RtldGlobal);
            if (handle != 0) return new MpiNative(name, handle);
            nint error = DlError();
            errors.Add(error != 0 ? Marshal.PtrToStringUTF8(error) ?? name : name);
        }
        throw new PeftSharpException("distributed: this process was started by an MPI launcher but no MPI library could be loaded (" +
            string.Join("; ", errors) + "). Install the MPI runtime the launcher belongs to (Debian: apt-get install openmpi-bin, or mpich), " +
            "or set PEFTSHARP_MPI_LIBRARY to its libmpi.so.");
    }

    public string Describe(int code)
    {
        var buffer = stackalloc byte[1024];
        int length = 0;
        return ErrorString(code, buffer, &length) == Success ? System.Text.Encoding.ASCII.GetString(buffer, Math.Max(0, length)) : $"MPI error {code}";
    }

    public string ProcessorName()
    {
        var buffer = stackalloc byte[1024];
        int length = 0;
        return GetProcessorName(buffer, &length) == Success ? System.Text.Encoding.ASCII.GetString(buffer, Math.Max(0, length)) : "?";
    }

    public string LibraryVersion()
    {
        var buffer = new byte[16384];
        int length = 0;
        fixed (byte* b = buffer)
            if (GetLibraryVersion(b, &length) != Success) return "?";
        return System.Text.Encoding.ASCII.GetString(buffer, 0, Math.Clamp(length, 0, buffer.Length)).Split('\n')[0].Trim('\0', ' ');
    }
}
