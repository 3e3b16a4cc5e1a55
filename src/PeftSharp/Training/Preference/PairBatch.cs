using PeftSharp.Data;

namespace PeftSharp.Training.Preference;

/// <summary>A tokenized preference pair; <see cref="Index"/> is its row in its dataset (for precomputed reference log-probs).</summary>
public sealed record TokenizedPair(int Index, TokenizedSequence Chosen, TokenizedSequence Rejected, double Margin);

/// <summary>Pairs in one model batch: the chosen sequences in rows 0..P−1, the rejected ones in rows P..2P−1 (TRL's concatenated_forward).</summary>
public sealed record PairBatch(IReadOnlyList<TokenizedPair> Pairs, SequenceBatch Sequences)
{
    public int Count => Pairs.Count;

    public static PairBatch Build(IReadOnlyList<TokenizedPair> pairs, int padId) =>
        new(pairs, SequenceBatch.Build([.. pairs.Select(p => p.Chosen), .. pairs.Select(p => p.Rejected)], padId));

    public static List<TokenizedPair> Tokenize(IReadOnlyList<PreferenceExample> examples, PreferenceTokenizer tokenizer)
    {
        var pairs = new List<TokenizedPair>(examples.Count);
        foreach (var e in examples)
        {
            if (e.Chosen == null || e.Rejected == null) throw new PeftSharpException($"{e.Where}: this trainer needs paired data (chosen and rejected).");
            var prompt = tokenizer.Prompt(e.Prompt);
            pairs.Add(new TokenizedPair(pairs.Count, tokenizer.Sequence(prompt, e.Chosen), tokenizer.Sequence(prompt, e.Rejected), e.Margin ?? 0));
        }
        return pairs;
    }

    public static IEnumerable<PairBatch> Batches(IReadOnlyList<TokenizedPair> pairs, int batchSize, int padId)
    {
        for (int i = 0; i < pairs.Count; i += batchSize)
            yield return Build(pairs.Skip(i).Take(batchSize).ToList(), padId);
    }
}
