using System.Text.RegularExpressions;

namespace PeftSharp.Training.Metrics;

/// <summary>A corpus BLEU result as sacreBLEU reports it (score and precisions in percent).</summary>
public sealed record BleuScore(double Score, double[] Precisions, double BrevityPenalty, double Ratio, long HypothesisLength, long ReferenceLength)
{
    public override string ToString() =>
        FormattableString.Invariant($"BLEU = {Score:F2} {string.Join("/", Precisions.Select(p => p.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))} (BP = {BrevityPenalty:F3} ratio = {Ratio:F3} hyp_len = {HypothesisLength} ref_len = {ReferenceLength})");
}

/// <summary>
/// Corpus BLEU exactly as sacreBLEU's defaults compute it (<c>corpus_bleu(hyps, refs)</c>: tokenize 13a,
/// mixed case, BLEU-4, smooth_method "exp", no effective order): n-gram matches clipped by the
/// maximum count over the references, summed over the corpus; the reference length per sentence is the
/// closest reference length (ties: the shorter); BP = exp(1 - r/c) when c &lt; r; an order with no
/// matches gets precision 100/(2^k·total) for its k-th such order; score = BP·exp(mean log precision).
/// </summary>
public static partial class Bleu
{
    public const int MaxOrder = 4;

    [GeneratedRegex(@"([\{-\~\[-\` -\&\(-\+\:-\@\/])")]
    private static partial Regex Punctuation();
    [GeneratedRegex(@"([^0-9])([\.,])")]
    private static partial Regex PeriodCommaAfterNonDigit();
    [GeneratedRegex(@"([\.,])([^0-9])")]
    private static partial Regex PeriodCommaBeforeNonDigit();
    [GeneratedRegex(@"([0-9])(-)")]
    private static partial Regex DashAfterDigit();

    /// <summary>sacreBLEU's "13a" tokenizer (mteval-v13a.pl): unescape a few entities, then split off punctuation.</summary>
    public static string[] Tokenize13a(string line)
    {
        line = line.Replace("<skipped>", "").Replace("-\n", "").Replace("\n", " ");
        if (line.Contains('&'))
            line = line.Replace("&quot;", "\"").Replace("&amp;", "&").Replace("&lt;", "<").Replace("&gt;", ">");
        line = " " + line + " ";
        line = Punctuation().Replace(line, " $1 ");
        line = PeriodCommaAfterNonDigit().Replace(line, "$1 $2 ");
        line = PeriodCommaBeforeNonDigit().Replace(line, " $1 $2");
        line = DashAfterDigit().Replace(line, "$1 $2 ");
        return line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
    }

    /// <summary>Corpus BLEU of <paramref name="hypotheses"/> against one or more reference streams (references[k][i] is the k-th reference of sentence i), as sacrebleu.corpus_bleu.</summary>
    public static BleuScore Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string>> references)
    {
        foreach (var stream in references)
            if (stream.Count != hypotheses.Count)
                throw new ArgumentException($"BLEU: a reference stream has {stream.Count} sentences for {hypotheses.Count} hypotheses.");
        var correct = new long[MaxOrder];
        var total = new long[MaxOrder];
        long hypLen = 0, refLen = 0;
        for (int i = 0; i < hypotheses.Count; i++)
        {
            var hyp = Tokenize13a(hypotheses[i]);
            var refs = references.Select(r => Tokenize13a(r[i])).ToList();
            hypLen += hyp.Length;
            refLen += ClosestLength(hyp.Length, refs);
            for (int n = 1; n <= MaxOrder; n++)
            {
                var maxRef = new Dictionary<string, int>();
                foreach (var r in refs)
                    foreach (var (gram, count) in Ngrams(r, n))
                        if (!maxRef.TryGetValue(gram, out int c) || count > c) maxRef[gram] = count;
                foreach (var (gram, count) in Ngrams(hyp, n))
                    correct[n - 1] += Math.Min(count, maxRef.GetValueOrDefault(gram));
                total[n - 1] += Math.Max(0, hyp.Length - n + 1);
            }
        }
        return Score(correct, total, hypLen, refLen);
    }

    /// <summary>sacreBLEU's compute_bleu with smooth_method "exp".</summary>
    public static BleuScore Score(long[] correct, long[] total, long hypLen, long refLen)
    {
        double bp = hypLen < refLen ? (hypLen > 0 ? Math.Exp(1 - (double)refLen / hypLen) : 0.0) : 1.0;
        var precisions = new double[MaxOrder];
        double smooth = 1.0;
        for (int n = 0; n < MaxOrder; n++)
        {
            if (total[n] == 0) break;
            if (correct[n] == 0)
            {
                smooth *= 2;
                precisions[n] = 100.0 / (smooth * total[n]);
            }
            else precisions[n] = 100.0 * correct[n] / total[n];
        }
        double ratio = refLen > 0 ? (double)hypLen / refLen : 0.0;
        if (hypLen == 0) return new BleuScore(0, precisions, bp, ratio, hypLen, refLen);
        double logSum = precisions.Sum(p => p == 0 ? -9999999999.0 : Math.Log(p));
        return new BleuScore(bp * Math.Exp(logSum / MaxOrder), precisions, bp, ratio, hypLen, refLen);
    }

    private static int ClosestLength(int hypLength, List<string[]> refs)
    {
        int best = -1, bestDiff = -1;
        foreach (var r in refs)
        {
            int diff = Math.Abs(hypLength - r.Length);
            if (bestDiff == -1 || diff < bestDiff || (diff == bestDiff && r.Length < best))
            {
                bestDiff = diff;
                best = r.Length;
            }
        }
        return Math.Max(0, best);
    }

    private static Dictionary<string, int> Ngrams(string[] tokens, int n)
    {
        var counts = new Dictionary<string, int>();
        for (int i = 0; i + n <= tokens.Length; i++)
        {
            string gram = string.Join(' ', tokens, i, n);
            counts[gram] = counts.GetValueOrDefault(gram) + 1;
        }
        return counts;
    }
}
