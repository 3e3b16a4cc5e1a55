using PeftSharp.Tensors;

namespace PeftSharp.Autograd;

/// <summary>
/// A bump allocator over large 64-byte-aligned f32 blocks, reset once per step. When a step needs
/// more than the current block it chains another; the next <see cref="Reset"/> replaces the chain
/// with one block of the high-water size, so from the second step on nothing is allocated.
/// </summary>
public sealed unsafe class Arena : IDisposable
{
    private const long AlignFloats = NativeBuffer<float>.Alignment / sizeof(float);
    private readonly List<NativeBuffer<float>> _blocks = [];
    private long _offset;
    private long _usedInEarlierBlocks;

    public Arena(long initialFloats)
    {
        _blocks.Add(new NativeBuffer<float>(Math.Max(AlignFloats, initialFloats), clear: false));
    }

    /// <summary>Floats handed out since the last reset.</summary>
    public long Used => _usedInEarlierBlocks + _offset;

    /// <summary>The most floats any step has used.</summary>
    public long HighWater { get; private set; }

    public long Capacity => _blocks.Sum(b => b.Length);

    public float* Allocate(long count, bool clear)
    {
        long rounded = (count + AlignFloats - 1) / AlignFloats * AlignFloats;
        var block = _blocks[^1];
        if (_offset + rounded > block.Length)
        {
            _usedInEarlierBlocks += _offset;
            block = new NativeBuffer<float>(Math.Max(rounded, block.Length), clear: false);
            _blocks.Add(block);
            _offset = 0;
        }
        float* p = block.Pointer + _offset;
        _offset += rounded;
        HighWater = Math.Max(HighWater, Used);
        if (clear) new Span<float>(p, checked((int)count)).Clear();
        return p;
    }

    /// <summary>The current allocation point, for <see cref="Release"/>.</summary>
    public ArenaMark Mark() => new(_blocks.Count - 1, _offset, _usedInEarlierBlocks);

    /// <summary>
    /// Frees everything allocated since <paramref name="mark"/> (pointers handed out since become
    /// invalid); blocks chained since are dropped. Gradient checkpointing uses it to discard a
    /// layer's intermediate activations.
    /// </summary>
    public void Release(ArenaMark mark)
    {
        if (mark.Block >= _blocks.Count) throw new InvalidOperationException("The arena was reset after this mark was taken.");
        for (int i = _blocks.Count - 1; i > mark.Block; i--)
        {
            _blocks[i].Dispose();
            _blocks.RemoveAt(i);
        }
        _offset = mark.Offset;
        _usedInEarlierBlocks = mark.UsedInEarlierBlocks;
    }

    /// <summary>Forgets every allocation (all pointers handed out become invalid).</summary>
    public void Reset()
    {
        // One block as large as the peak, also when Release already dropped the chained blocks (a no-grad
        // forward releases each layer's): otherwise every step would chain and map fresh blocks again.
        if (_blocks.Count > 1 || _blocks[0].Length < HighWater)
        {
            foreach (var b in _blocks) b.Dispose();
            _blocks.Clear();
            _blocks.Add(new NativeBuffer<float>(HighWater, clear: false));
        }
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
