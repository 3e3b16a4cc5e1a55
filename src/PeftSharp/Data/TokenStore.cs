using System.Collections;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace PeftSharp.Data;

/// <summary>What is known of a store's examples without reading them: the largest token id, the longest example, and the
/// tokens in the loss of an unpacked row (loss-mask tokens at t ≥ 1 of each example).</summary>
public sealed record TokenStoreSummary(int MaxTokenId, int LongestExample, long LossTokens);

/// <summary>
/// Tokenized examples end to end: every example's token ids (int32), its loss mask (one byte a token, 1 = in the loss),
/// and the offset of each example's first token (int64, one more than the examples). Held in arrays
/// (<see cref="FromExamples"/>, a <see cref="TokenStoreWriter"/> in memory) or memory-mapped from the tokenization cache
/// (<see cref="TokenizationCache"/>), so the trainer reads rows of a large dataset without holding them as managed arrays.
/// An indexer gives one example as arrays (a copy).
/// </summary>
public abstract class TokenStore : IReadOnlyList<TokenizedExample>
{
    public abstract int Count { get; }
    public abstract TokenStoreSummary Summary { get; }

    /// <summary>The first token of example <paramref name="i"/> (0 ≤ i ≤ Count; Offset(Count) is the token count).</summary>
    public abstract long Offset(int i);

    public abstract ReadOnlySpan<int> Ids(int i);

    /// <summary>The loss mask of example i: 1 where the token is in the loss.</summary>
    public abstract ReadOnlySpan<byte> Mask(int i);

    public int Length(int i) => checked((int)(Offset(i + 1) - Offset(i)));
    public long Tokens => Offset(Count);

    public TokenizedExample this[int i]
    {
        get
        {
            var mask = Mask(i);
            var inLoss = new bool[mask.Length];
            for (int t = 0; t < mask.Length; t++) inLoss[t] = mask[t] != 0;
            return new TokenizedExample(Ids(i).ToArray(), inLoss);
        }
    }

    public IEnumerator<TokenizedExample> GetEnumerator()
    {
        for (int i = 0; i < Count; i++) yield return this[i];
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>The examples in memory, in order (empty ones are kept).</summary>
    public static TokenStore FromExamples(IEnumerable<TokenizedExample> examples)
    {
        var writer = TokenStoreWriter.InMemory();
        foreach (var e in examples) writer.Append(e);
        return writer.Complete();
    }
}

/// <summary>Appends tokenized examples to a store, in memory or into the cache's files, keeping the store's summary.</summary>
public abstract class TokenStoreWriter : IDisposable
{
    private int _maxTokenId = -1, _longest;
    private long _lossTokens, _tokens;

    public int Count { get; private set; }
    public long Tokens => _tokens;
    public TokenStoreSummary Summary => new(_maxTokenId, _longest, _lossTokens);

    public static TokenStoreWriter InMemory() => new MemoryWriter();

    public void Append(TokenizedExample e)
    {
        var ids = e.InputIds;
        if (e.InLoss.Length != ids.Length) throw new ArgumentException($"An example of {ids.Length} ids has a loss mask of {e.InLoss.Length}.", nameof(e));
        var mask = MemoryMarshal.Cast<bool, byte>(e.InLoss.AsSpan());
        foreach (int id in ids) if (id > _maxTokenId) _maxTokenId = id;
        for (int t = 1; t < mask.Length; t++) _lossTokens += mask[t];
        _longest = Math.Max(_longest, ids.Length);
        _tokens += ids.Length;
        Count++;
        Write(ids, mask, _tokens);
    }

    /// <summary>Stores one example; <paramref name="end"/> is the offset after it.</summary>
    protected abstract void Write(ReadOnlySpan<int> ids, ReadOnlySpan<byte> mask, long end);

    public virtual void Dispose() { }

    public virtual TokenStore Complete() => throw new NotSupportedException();

    private sealed class MemoryWriter : TokenStoreWriter
    {
        private readonly List<int> _ids = [];
        private readonly List<byte> _mask = [];
        private readonly List<long> _offsets = [0];

        protected override void Write(ReadOnlySpan<int> ids, ReadOnlySpan<byte> mask, long end)
        {
            _ids.AddRange(ids);
            _mask.AddRange(mask);
            _offsets.Add(end);
        }

        public override TokenStore Complete() => new ArrayTokenStore([.. _ids], [.. _mask], [.. _offsets], Summary);
    }

    private sealed class ArrayTokenStore(int[] ids, byte[] mask, long[] offsets, TokenStoreSummary summary) : TokenStore
    {
        public override int Count => offsets.Length - 1;
        public override TokenStoreSummary Summary => summary;
        public override long Offset(int i) => offsets[i];
        public override ReadOnlySpan<int> Ids(int i) => ids.AsSpan((int)offsets[i], Length(i));
        public override ReadOnlySpan<byte> Mask(int i) => mask.AsSpan((int)offsets[i], Length(i));
    }
}

/// <summary>A read-only memory mapping of one whole file (nothing mapped for an empty file); the mapping lives as long as this object.</summary>
internal sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;

    public MappedFile(string path)
    {
        Length = new FileInfo(path).Length;
        if (Length == 0) return;
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _file.CreateViewAccessor(0, Length, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        Pointer = p + _view.PointerOffset;
    }

    public long Length { get; }
    public byte* Pointer { get; }

    ~MappedFile() => Release();

    public void Dispose()
    {
        Release();
        GC.SuppressFinalize(this);
    }

    private int _released;

    private void Release()
    {
        if (_view == null || Interlocked.Exchange(ref _released, 1) != 0) return;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file!.Dispose();
    }
}

/// <summary>A store over three mapped files: ids (int32), mask (bytes) and offsets (int64).</summary>
internal sealed unsafe class MappedTokenStore(MappedFile ids, MappedFile mask, MappedFile offsets, int count, TokenStoreSummary summary) : TokenStore, IDisposable
{
    private readonly int* _ids = (int*)ids.Pointer;
    private readonly byte* _mask = mask.Pointer;
    private readonly long* _offsets = (long*)offsets.Pointer;

    public override int Count => count;
    public override TokenStoreSummary Summary => summary;

    public override long Offset(int i) => (uint)i <= (uint)count ? _offsets[i] : throw new ArgumentOutOfRangeException(nameof(i));
    public override ReadOnlySpan<int> Ids(int i) => new(_ids + Offset(i), Length(i));
    public override ReadOnlySpan<byte> Mask(int i) => new(_mask + Offset(i), Length(i));

    public void Dispose()
    {
        ids.Dispose();
        mask.Dispose();
        offsets.Dispose();
    }
}
