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

    private const int ProtRead = 1, ProtWrite = 2, MapPrivate = 2, MapAnonymous = 0x20;
    private static readonly delegate* unmanaged<void*, nuint, int, int, int, nint, void*> Map;
    private static readonly delegate* unmanaged<void*, nuint, int> Unmap;

    static PageMemory()
    {
        if (!OperatingSystem.IsLinux()) return;
        var libc = NativeLibrary.GetMainProgramHandle();
        if (NativeLibrary.TryGetExport(libc, "mmap", out var map) && NativeLibrary.TryGetExport(libc, "munmap", out var unmap))
        {
            Map = (delegate* unmanaged<void*, nuint, int, int, int, nint, void*>)map;
            Unmap = (delegate* unmanaged<void*, nuint, int>)unmap;
        }
    }

    public static bool Available => Map != null;

    /// <summary>Zero-filled, page-aligned memory of <paramref name="bytes"/> bytes; requires <see cref="Available"/>.</summary>
    public static void* Allocate(nuint bytes)
    {
        void* p = Map(null, bytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (p == (void*)-1) throw new OutOfMemoryException($"Could not map {bytes:N0} bytes of memory.");
        return p;
    }

    public static void Free(void* pointer, nuint bytes)
    {
        if (Unmap(pointer, bytes) != 0) throw new InvalidOperationException($"munmap of {bytes:N0} bytes failed.");
    }
}
