using System.Runtime.InteropServices;

namespace PeftSharp.Tensors;

/// <summary>
/// Large blocks straight from the operating system's page allocator (anonymous mmap on Linux). glibc's malloc
/// keeps freed blocks under its dynamic mmap threshold (up to 32 MiB) in the heap, so a forward pass that frees
/// many layer-sized buffers leaves them resident: measured, 150 MiB of a distilgpt2 4×256 forward's peak. Pages
/// from mmap go back to the system on free and arrive zeroed, so clearing them is free. Elsewhere (or when the
/// symbols cannot be found) callers fall back to <see cref="NativeMemory.AlignedAlloc"/>.
/// </summary>
internal static unsafe class PageMemory
{
    /// <summary>Blocks at least this large come from the page allocator.</summary>
    public const long Threshold = 1 << 20;

    private const int ProtRead = 1, ProtWrite = 2, MapPrivate = 2, MapAnonymous = 0x20, MapNoReserve = 0x4000;
    private static readonly delegate* unmanaged<void*, nuint, int, int, int, nint, void*> Map;
    private static readonly delegate* unmanaged<void*, nuint, int> Unmap;
    private static readonly delegate* unmanaged<void*, nuint, int, int> Advise;
    private const int AdviseDontNeed = 4, AdviseHugePage = 14;
    /// <summary>Blocks at least this large are offered transparent huge pages (see <see cref="Allocate"/>).</summary>
    public const long HugePageThreshold = 4 << 20;

    static PageMemory()
    {
        if (!OperatingSystem.IsLinux()) return;
        var libc = NativeLibrary.GetMainProgramHandle();
        if (NativeLibrary.TryGetExport(libc, "mmap", out var map) && NativeLibrary.TryGetExport(libc, "munmap", out var unmap))
        {
            Map = (delegate* unmanaged<void*, nuint, int, int, int, nint, void*>)map;
            Unmap = (delegate* unmanaged<void*, nuint, int>)unmap;
        }
        if (NativeLibrary.TryGetExport(libc, "madvise", out var advise)) Advise = (delegate* unmanaged<void*, nuint, int, int>)advise;
    }

    public static bool Available => Map != null;

    /// <summary>
    /// Zero-filled, page-aligned memory of <paramref name="bytes"/> bytes; requires <see cref="Available"/>. Blocks of
    /// <see cref="HugePageThreshold"/> or more (weight matrices, KV caches) are advised MADV_HUGEPAGE, so where the
    /// system's transparent huge pages are "madvise" the whole 2 MiB stretches inside them are backed by huge pages: a
    /// decoding step streams every weight once, and with 4 KiB pages the hardware prefetcher stops at every page edge
    /// and each page costs a TLB miss. Only whole huge pages inside the block are affected, so nothing beyond the
    /// block becomes resident.
    /// </summary>
    public static void* Allocate(nuint bytes)
    {
        void* p = Map(null, bytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (p == (void*)-1) throw new OutOfMemoryException($"Could not map {bytes:N0} bytes of memory.");
        if (Advise != null && (long)bytes >= HugePageThreshold && HugePages) Advise(p, bytes, AdviseHugePage);
        return p;
    }

    /// <summary>PEFTSHARP_HUGEPAGES=0 turns the huge-page advice off (to measure it, or where it does harm).</summary>
    private static readonly bool HugePages = Environment.GetEnvironmentVariable("PEFTSHARP_HUGEPAGES") != "0";

    /// <summary>
    /// Address space of <paramref name="bytes"/> bytes with no memory committed behind it (MAP_NORESERVE): pages become
    /// resident as they are first written, so a bump allocator can grow in place without ever moving. Null where the
    /// system refuses (a strict overcommit policy, an address-space limit) or mmap is not available.
    /// </summary>
    public static void* TryReserve(nuint bytes)
    {
        if (Map == null) return null;
        void* p = Map(null, bytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous | MapNoReserve, -1, 0);
        return p == (void*)-1 ? null : p;
    }

    /// <summary>Unmaps a block from <see cref="Allocate"/> or <see cref="TryReserve"/> (also from finalizers: it never throws;
    /// munmap only fails on arguments it did not hand out).</summary>
    public static void Free(void* pointer, nuint bytes) => Unmap(pointer, bytes);

    /// <summary>
    /// Drops the whole pages inside [<paramref name="start"/>, start + <paramref name="bytes"/>) of a read-only
    /// file mapping from this process's resident set (madvise DONTNEED): a loader calls it once it has copied or
    /// quantized a tensor it will not read again, so the file's pages do not stay counted beside the copy. Touching
    /// them again re-reads the file. Never call it on anonymous memory (its contents would be zeroed).
    /// </summary>
    public static void DropFilePages(void* start, long bytes)
    {
        if (Advise == null || bytes <= 0) return;
        const long page = 4096;
        long first = ((long)start + page - 1) & ~(page - 1), end = ((long)start + bytes) & ~(page - 1);
        if (end > first) Advise((void*)first, (nuint)(end - first), AdviseDontNeed);
    }
}
