using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>
/// A bump allocator over 64-byte-aligned f32 memory, rewound once per step (<see cref="Reset"/>) and by
/// <see cref="Release"/>, never freed until disposed. On Linux it is one reservation of address space
/// (<see cref="ReservedFloats"/>) whose pages become resident as they are first written: it grows in place, the
/// same offsets are reused step after step, and memory released within a step (a layer's activations) is
/// reused by what comes next at the same addresses, so the resident size is the high-water mark. A freshly
/// touched page costs a fault and a zeroing: replacing blocks as the step's needs grow made the second step of a
/// distilgpt2 LoRA run as slow as the first (`bench train`: 650 tok/s before, 886 after). Where no address
/// space can be reserved, it chains blocks as requests outgrow them and walks the same chain again after a
/// rewind (a block's tail too short for a request is skipped: address space, not memory, since it is not written).
/// </summary>
public sealed unsafe class Arena : IDisposable
{
    private const long AlignFloats = NativeBuffer<float>.Alignment / sizeof(float);
    private readonly List<NativeBuffer<float>> _blocks = [];
    private int _current;
    private long _offset;
    private long _usedInEarlierBlocks;

    /// <summary>
    /// Address space an arena reserves where the system allows: twice the machine's memory (at least 4 GiB), more than
    /// a step can hold resident, so it needs no second block (one is chained if it ever does).
    /// </summary>
    public static long ReservedFloats { get; } = Math.Max(1L << 32, 2 * GC.GetGCMemoryInfo().TotalAvailableMemoryBytes) / sizeof(float);

    /// <param name="initialFloats">The first block's size where no address space can be reserved (other systems).</param>
    public Arena(long initialFloats) : this(initialFloats, reserve: true)
    {
    }

    /// <summary>With <paramref name="reserve"/> false, the chained blocks other systems use (for tests of that path).</summary>
    internal Arena(long initialFloats, bool reserve)
    {
        _blocks.Add((reserve ? NativeBuffer<float>.TryReserve(ReservedFloats) : null)
            ?? new NativeBuffer<float>(Math.Max(AlignFloats, initialFloats), clear: false));
    }

    /// <summary>Floats handed out since the last reset.</summary>
    public long Used => _usedInEarlierBlocks + _offset;

    /// <summary>The most floats any step has used.</summary>
    public long HighWater { get; private set; }

    /// <summary>Floats in all blocks (reserved address space; only what was written is resident).</summary>
    public long Capacity => _blocks.Sum(b => b.Length);

    public float* Allocate(long count, bool clear)
    {
        long rounded = (count + AlignFloats - 1) / AlignFloats * AlignFloats;
        while (_offset + rounded > _blocks[_current].Length)
        {
            _usedInEarlierBlocks += _offset;
            _offset = 0;
            if (_current + 1 == _blocks.Count)
                _blocks.Add(new NativeBuffer<float>(Math.Max(rounded, _blocks[^1].Length), clear: false));
            _current++;
        }
        float* p = _blocks[_current].Pointer + _offset;
        _offset += rounded;
        HighWater = Math.Max(HighWater, Used);
        if (clear) new Span<float>(p, checked((int)count)).Clear();
        return p;
    }

    /// <summary>The current allocation point, for <see cref="Release"/>.</summary>
    public ArenaMark Mark() => new(_current, _offset, _usedInEarlierBlocks);

    /// <summary>
    /// Rewinds to <paramref name="mark"/>: everything allocated since is free again (pointers handed out since
    /// become invalid) and the next allocations reuse that memory. Gradient checkpointing uses it to discard a
    /// layer's intermediate activations, a no-grad forward to drop each layer's.
    /// </summary>
    public void Release(ArenaMark mark)
    {
        if (mark.Block > _current || (mark.Block == _current && mark.Offset > _offset))
            throw new InvalidOperationException("The arena was reset or rewound past this mark after it was taken.");
        _current = mark.Block;
        _offset = mark.Offset;
        _usedInEarlierBlocks = mark.UsedInEarlierBlocks;
    }

    /// <summary>Forgets every allocation (all pointers handed out become invalid); the blocks stay for the next step.</summary>
    public void Reset()
    {
        _current = 0;
        _offset = 0;
        _usedInEarlierBlocks = 0;
    }

    public void Dispose()
    {
        foreach (var b in _blocks) b.Dispose();
        _blocks.Clear();
    }
}

/// <summary>A position in an <see cref="Arena"/> (see <see cref="Arena.Mark"/>).</summary>
public readonly record struct ArenaMark(int Block, long Offset, long UsedInEarlierBlocks);
