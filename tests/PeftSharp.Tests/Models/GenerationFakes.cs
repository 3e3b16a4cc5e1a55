using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>
/// A deterministic stand-in for a model's KV-cache session: the next-token logits of a sequence are a
/// fixed random function of its last two real tokens (a trigram table), or of its last one (a bigram
/// table, for large vocabularies); masked tokens are skipped, so left padding changes nothing when the
/// mask is honoured.
/// </summary>
internal sealed class FakeDecodeSession : IDecodeSession
{
    private readonly float[] _table;
    private readonly int _vocab;
    private readonly List<int>[] _history;
    private readonly bool _trigram;

    public FakeDecodeSession(int batch, int vocab, ulong seed = 7, float scale = 3f, bool trigram = true)
    {
        _vocab = vocab;
        _trigram = trigram;
        _table = new float[checked(trigram ? vocab * vocab * vocab : vocab * vocab)];
        new Rng(seed).FillNormal(_table, 0, scale);
        _history = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
    }

    public int VocabSize => _vocab;
    public int AppendCalls { get; private set; }
    public int MaskedTokens { get; private set; }

    /// <summary>The real (unmasked) tokens each sequence has received.</summary>
    public IReadOnlyList<int> History(int sequence) => _history[sequence];

    /// <summary>The logits the session gives after the real tokens <paramref name="context"/>.</summary>
    public ReadOnlySpan<float> LogitsAfter(IReadOnlyList<int> context)
    {
        int last = context[^1], previous = _trigram && context.Count > 1 ? context[^2] : 0;
        return _table.AsSpan((previous * _vocab + last) * _vocab, _vocab);
    }

    public void Append(ReadOnlySpan<int> tokens, ReadOnlySpan<int> mask, int count, Span<float> lastLogits)
    {
        AppendCalls++;
        Assert.Equal(_history.Length * count, tokens.Length);
        Assert.Equal(tokens.Length, mask.Length);
        for (int b = 0; b < _history.Length; b++)
        {
            for (int t = 0; t < count; t++)
            {
                if (mask[b * count + t] == 0) { MaskedTokens++; continue; }
                _history[b].Add(tokens[b * count + t]);
            }
            if (_history[b].Count > 0) LogitsAfter(_history[b]).CopyTo(lastLogits.Slice(b * _vocab, _vocab));
            else lastLogits.Slice(b * _vocab, _vocab).Clear();
        }
    }

    public void Dispose() { }
}
