using System.Collections.Concurrent;
using System.Text;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>
/// Hugging Face's BPE model: a word's characters (or their &lt;0xNN&gt; bytes, or unk) are merged
/// lowest merge rank first, leftmost first among equal ranks, with a heap of candidate pairs
/// (the same order as tokenizers' Word::merge_all). Encoding is thread-safe: results of short words
/// go to a bounded per-instance concurrent cache and scratch buffers are per thread.
/// </summary>
internal sealed class BpeModel
{
    private const int CacheCapacity = 200_000, MaxCachedLength = 256;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabLookup;
    private readonly string?[] _idToToken;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int _unkId;
    private readonly bool _fuseUnk, _byteFallback, _ignoreMerges;
    private readonly string? _prefix, _suffix;
    private readonly int[] _byteIds = new int[256];
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;
    private int _cacheCount;
    // SentencePiece-style vocabularies where no token holds '▁' after another character: a word can be
    // cut before each '▁' that follows a non-'▁' character without changing the result, since no merge
    // can produce a token across that point. This turns a whole unsplit text into cacheable words.
    private readonly bool _metaspaceBarrier;

    [ThreadStatic] private static Scratch? t_scratch;

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string A, string B)> merges, string? unkToken,
        bool fuseUnk, bool byteFallback, bool ignoreMerges, string? continuingSubwordPrefix, string? endOfWordSuffix, string file)
    {
        _vocab = vocab;
        _vocabLookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        int maxId = -1;
        foreach (var id in vocab.Values) maxId = Math.Max(maxId, id);
        _idToToken = new string?[maxId + 1];
        foreach (var (token, id) in vocab)
        {
            if (id < 0) throw new PeftSharpException($"{file}: vocabulary token '{token}' has a negative id {id}.");
            _idToToken[id] = token;
        }
        _unkId = -1;
        if (unkToken != null && !vocab.TryGetValue(unkToken, out _unkId))
            throw new PeftSharpException($"{file}: unk_token '{unkToken}' is not in the vocabulary.");
        _fuseUnk = fuseUnk;
        _byteFallback = byteFallback;
        _ignoreMerges = ignoreMerges;
        _prefix = string.IsNullOrEmpty(continuingSubwordPrefix) ? null : continuingSubwordPrefix;
        _suffix = string.IsNullOrEmpty(endOfWordSuffix) ? null : endOfWordSuffix;
        for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;

        _metaspaceBarrier = _prefix == null && _suffix == null && MetaspaceIsBarrier(vocab.Keys);

        _merges = new Dictionary<long, (int, int)>(merges.Count);
        int prefixLength = _prefix?.Length ?? 0;
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (a, b) = merges[rank];
            if (!vocab.TryGetValue(a, out int ida) || !vocab.TryGetValue(b, out int idb))
                throw new PeftSharpException($"{file}: merge {rank} ('{a} {b}') uses a token missing from the vocabulary.");
            string merged = string.Concat(a, b.Length >= prefixLength && prefixLength > 0 && b.StartsWith(_prefix!, StringComparison.Ordinal) ? b[prefixLength..] : b);
            if (!vocab.TryGetValue(merged, out int newId))
                throw new PeftSharpException($"{file}: merge {rank} ('{a} {b}') makes '{merged}', which is not in the vocabulary.");
            _merges[Pair(ida, idb)] = (rank, newId);
        }
    }

    public int VocabSize => _idToToken.Length;

    public bool TryTokenToId(ReadOnlySpan<char> token, out int id) => _vocabLookup.TryGetValue(token, out id);

    public string? IdToToken(int id) => (uint)id < (uint)_idToToken.Length ? _idToToken[id] : null;

    private static long Pair(int a, int b) => ((long)a << 32) | (uint)b;

    private static bool MetaspaceIsBarrier(IEnumerable<string> tokens)
    {
        bool any = false;
        foreach (var t in tokens)
        {
            for (int j = 1; j < t.Length; j++)
                if (t[j] == Metaspace && t[j - 1] != Metaspace) return false;
            any |= t.Length > 1 && t[0] == Metaspace;
        }
        return any;
    }

    private const char Metaspace = '\u2581';

    /// <summary>Appends the ids of one pre-tokenized word.</summary>
    public void Tokenize(ReadOnlySpan<char> word, List<int> output)
    {
        if (!_metaspaceBarrier || word.Length < 2)
        {
            TokenizeWord(word, output);
            return;
        }
        int start = 0;
        for (int i = 1; i < word.Length; i++)
        {
            if (word[i] != Metaspace || word[i - 1] == Metaspace) continue;
            TokenizeWord(word[start..i], output);
            start = i;
        }
        TokenizeWord(word[start..], output);
    }

    private void TokenizeWord(ReadOnlySpan<char> word, List<int> output)
    {
        if (word.IsEmpty) return;
        if (_ignoreMerges && _vocabLookup.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        bool cacheable = word.Length <= MaxCachedLength;
        if (cacheable && _cacheLookup.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        var scratch = t_scratch ??= new Scratch();
        int n = Symbols(word, scratch);
        Merge(scratch, n);
        if (!cacheable)
        {
            for (int i = 0; i >= 0 && n > 0; i = scratch.Next[i]) output.Add(scratch.Ids[i]);
            return;
        }
        int count = 0;
        for (int i = 0; i >= 0 && n > 0; i = scratch.Next[i]) count++;
        var ids = new int[count];
        count = 0;
        for (int i = 0; i >= 0 && n > 0; i = scratch.Next[i]) ids[count++] = scratch.Ids[i];
        output.AddRange(ids);
        if (Interlocked.Increment(ref _cacheCount) > CacheCapacity)
        {
            _cache.Clear();
            Interlocked.Exchange(ref _cacheCount, 0);
        }
        _cache.TryAdd(word.ToString(), ids);
    }

    /// <summary>The initial symbols: one per character, else its byte-fallback tokens, else (fused) unk.</summary>
    private int Symbols(ReadOnlySpan<char> word, Scratch scratch)
    {
        scratch.Ensure(word.Length * 4 + 4);
        int n = 0;
        bool pendingUnk = false;
        Span<byte> utf8 = stackalloc byte[64];
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            bool isFirst = i == 0, isLast = i + len == word.Length;
            ReadOnlySpan<char> piece = word.Slice(i, len);
            i += len;
            string? decorated = null;
            if ((_prefix != null && !isFirst) || (_suffix != null && isLast))
            {
                decorated = string.Concat(!isFirst ? _prefix : "", piece.ToString(), isLast ? _suffix : "");
                piece = decorated;
            }
            if (_vocabLookup.TryGetValue(piece, out int id))
            {
                if (pendingUnk) { scratch.Ids[n++] = _unkId; pendingUnk = false; }
                scratch.Ids[n++] = id;
                continue;
            }
            if (_byteFallback)
            {
                int byteCount = Encoding.UTF8.GetByteCount(piece);
                Span<byte> bytes = byteCount <= utf8.Length ? utf8[..byteCount] : new byte[byteCount];
                Encoding.UTF8.GetBytes(piece, bytes);
                bool all = true;
                foreach (byte b in bytes) all &= _byteIds[b] >= 0;
                if (all)
                {
                    scratch.Ensure(n + bytes.Length + word.Length);
                    foreach (byte b in bytes) scratch.Ids[n++] = _byteIds[b];
                    continue;
                }
            }
            if (_unkId < 0) continue;
            if (pendingUnk && !_fuseUnk) scratch.Ids[n++] = _unkId;
            pendingUnk = true;
        }
        if (pendingUnk) scratch.Ids[n++] = _unkId;
        return n;
    }

    private void Merge(Scratch s, int n)
    {
        if (n == 0) return;
        var ids = s.Ids;
        var prev = s.Prev;
        var next = s.Next;
        var alive = s.Alive;
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        var heap = s.Heap;
        heap.Clear();
        for (int i = 0; i + 1 < n; i++)
            if (_merges.TryGetValue(Pair(ids[i], ids[i + 1]), out var m)) heap.Push(((long)m.Rank << 32) | (uint)i);
        while (heap.Count > 0)
        {
            long top = heap.Pop();
            int rank = (int)(top >> 32), pos = (int)(top & 0xFFFFFFFF);
            if (!alive[pos]) continue;
            int right = next[pos];
            if (right < 0) continue;
            if (!_merges.TryGetValue(Pair(ids[pos], ids[right]), out var current) || current.Rank != rank) continue;
            ids[pos] = current.NewId;
            alive[right] = false;
            int after = next[right];
            next[pos] = after;
            if (after >= 0) prev[after] = pos;
            int before = prev[pos];
            if (before >= 0 && _merges.TryGetValue(Pair(ids[before], ids[pos]), out var left))
                heap.Push(((long)left.Rank << 32) | (uint)before);
            if (after >= 0 && _merges.TryGetValue(Pair(ids[pos], ids[after]), out var rightMerge))
                heap.Push(((long)rightMerge.Rank << 32) | (uint)pos);
        }
    }

    private sealed class Scratch
    {
        public int[] Ids = new int[256], Prev = new int[256], Next = new int[256];
        public bool[] Alive = new bool[256];
        public readonly MinHeap Heap = new();

        public void Ensure(int size)
        {
            if (Ids.Length >= size) return;
            int n = Math.Max(size, Ids.Length * 2);
            Array.Resize(ref Ids, n);
            Array.Resize(ref Prev, n);
            Array.Resize(ref Next, n);
            Array.Resize(ref Alive, n);
        }
    }

    private sealed class MinHeap
    {
        private long[] _items = new long[256];
        public int Count { get; private set; }

        public void Clear() => Count = 0;

        public void Push(long item)
        {
            if (Count == _items.Length) Array.Resize(ref _items, Count * 2);
            int i = Count++;
            while (i > 0)
            {
                int parent = (i - 1) >> 1;
                if (_items[parent] <= item) break;
                _items[i] = _items[parent];
                i = parent;
            }
            _items[i] = item;
        }

        public long Pop()
        {
            long result = _items[0];
            long last = _items[--Count];
            int i = 0;
            while (true)
            {
                int child = 2 * i + 1;
                if (child >= Count) break;
                if (child + 1 < Count && _items[child + 1] < _items[child]) child++;
                if (_items[child] >= last) break;
                _items[i] = _items[child];
                i = child;
            }
            if (Count > 0) _items[i] = last;
            return result;
        }
    }
}
