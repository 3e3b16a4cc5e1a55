using System.Runtime.InteropServices;

namespace PeftSharp.Kernels;

/// <summary>
/// Places emitted machine code in its own pages: mapped read-write (anonymous mmap), written, then switched to
/// read-execute with mprotect, so no page is ever writable and executable at once (W^X). Linux only; the pages
/// live as long as the process (the kernels are emitted once). Null where the system refuses (a policy that
/// forbids making pages executable, another OS), and the callers then keep their managed path.
/// </summary>
internal static unsafe class ExecutableCode
{
    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivate = 2, MapAnonymous = 0x20;

    public static void* TryPlace(ReadOnlySpan<byte> code)
    {
        if (!OperatingSystem.IsLinux() || code.IsEmpty) return null;
        var libc = NativeLibrary.GetMainProgramHandle();
        if (!NativeLibrary.TryGetExport(libc, "mmap", out var mapAddress) || !NativeLibrary.TryGetExport(libc, "mprotect", out var protectAddress)
            || !NativeLibrary.TryGetExport(libc, "munmap", out var unmapAddress))
            return null;
        var map = (delegate* unmanaged<void*, nuint, int, int, int, nint, void*>)mapAddress;
        var protect = (delegate* unmanaged<void*, nuint, int, int>)protectAddress;
        var unmap = (delegate* unmanaged<void*, nuint, int>)unmapAddress;
        nuint bytes = (nuint)((code.Length + 4095) & ~4095);
        void* p = map(null, bytes, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (p == (void*)-1) return null;
        code.CopyTo(new Span<byte>(p, code.Length));
        if (protect(p, bytes, ProtRead | ProtExec) != 0)
        {
            unmap(p, bytes);
            return null;
        }
        return p;
    }
}
