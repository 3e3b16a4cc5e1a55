using System.Runtime.InteropServices;

namespace PeftSharp.Tensors;

/// <summary>
/// A block of native memory aligned to 64 bytes (one cache line, one Vector512), with a 64-bit
/// element count. Parameters, gradients, activations and optimizer state live in these blocks;
/// the GC never moves them, so kernels take raw pointers. Blocks of a mebibyte or more come from the page
/// allocator (<see cref="PageMemory"/>), so freeing them returns them to the system.
/// </summary>
public sealed unsafe class NativeBuffer<T> : IDisposable where T : unmanaged
{
    public const int Alignment = 64;
    private T* _pointer;
    private readonly bool _paged;
    private readonly bool _reserved;

    public NativeBuffer(long length, bool clear = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        nuint bytes = (nuint)Math.Max(1, length) * (nuint)sizeof(T);
        _paged = bytes >= PageMemory.Threshold && PageMemory.Available;
        if (_paged) _pointer = (T*)PageMemory.Allocate(bytes);
        else
        {
            _pointer = (T*)NativeMemory.AlignedAlloc(bytes, Alignment);
            if (clear) NativeMemory.Clear(_pointer, bytes);
        }
        GC.AddMemoryPressure((long)bytes);
    }

    private NativeBuffer(T* pointer, long length)
    {
        _pointer = pointer;
        _paged = true;
        _reserved = true;
        Length = length;
    }

    private NativeBuffer(T* pointer, long length, IDisposable owner)
    {
        _pointer = pointer;
        _reserved = true;
        _viewOwner = owner;
        Length = length;
    }

    /// <summary>The memory of another object (a memory-mapped file's bytes); this buffer never frees it.</summary>
    private readonly IDisposable? _viewOwner;

    /// <summary>
    /// A buffer over <paramref name="length"/> elements at <paramref name="pointer"/> that <paramref name="owner"/> keeps valid
    /// (a lease on a memory-mapped checkpoint): disposing the buffer disposes the owner, never the memory itself.
    /// </summary>
    public static NativeBuffer<T> View(T* pointer, long length, IDisposable owner)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        return new NativeBuffer<T>(pointer, length, owner);
    }

    /// <summary>
    /// <paramref name="length"/> elements of reserved address space (<see cref="PageMemory.TryReserve"/>): zero-filled,
    /// resident only where written, never moved. Null where the system does not allow it; callers fall back to a
    /// normal buffer.
    /// </summary>
    public static NativeBuffer<T>? TryReserve(long length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        void* p = PageMemory.TryReserve((nuint)length * (nuint)sizeof(T));
        return p == null ? null : new NativeBuffer<T>((T*)p, length);
    }

    public long Length { get; }
    public long ByteLength => Length * sizeof(T);

    /// <summary>Whether the memory belongs to another object (<see cref="View"/>).</summary>
    public bool IsView => _viewOwner != null;

    public T* Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(_pointer == null, this);
            return _pointer;
        }
    }

    /// <summary>The whole buffer as a span; throws when it holds more than int.MaxValue elements.</summary>
    public Span<T> Span => Length <= int.MaxValue
        ? new Span<T>(Pointer, (int)Length)
        : throw new InvalidOperationException($"Buffer of {Length} elements is too large for one Span; use Slice.");

    public Span<T> Slice(long start, int length)
    {
        if ((ulong)start > (ulong)Length || (ulong)length > (ulong)(Length - start))
            throw new ArgumentOutOfRangeException(nameof(start), $"Slice [{start}, {start + length}) is outside a buffer of {Length} elements.");
        return new Span<T>(Pointer + start, length);
    }

    public void Clear() => NativeMemory.Clear(Pointer, (nuint)ByteLength);

    public void Dispose()
    {
        if (_pointer == null) return;
        if (_viewOwner != null)
        {
            _pointer = null;
            _viewOwner.Dispose();
            GC.SuppressFinalize(this);
            return;
        }
        Free();
        if (!_reserved) GC.RemoveMemoryPressure((long)Math.Max(1, Length) * sizeof(T));
        _pointer = null;
        GC.SuppressFinalize(this);
    }

    private void Free()
    {
        if (_paged) PageMemory.Free(_pointer, (nuint)Math.Max(1, Length) * (nuint)sizeof(T));
        else NativeMemory.AlignedFree(_pointer);
    }

    ~NativeBuffer()
    {
        if (_pointer != null && _viewOwner == null) Free();
    }
}
