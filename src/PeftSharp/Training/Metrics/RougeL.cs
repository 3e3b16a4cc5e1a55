using System.Text.RegularExpressions;

namespace PeftSharp.Training.Metrics;

/// <summary>Precision, recall and F-measure of one ROUGE score.</summary>
public readonly record struct RougeScore(double Precision, double Recall, double FMeasure);

/// <summary>
/// ROUGE-L as Google's rouge-score package computes it (<c>RougeScorer(["rougeL"])</c>, no stemmer):
/// tokens are the lowercased text with every run of characters outside [a-z0-9] as a separator; the
/// LCS of target and prediction gives precision = lcs/|prediction|, recall = lcs/|target|,
/// F = 2PR/(P+R) (0 when both are 0). The corpus score is the mean F over the pairs.
/// </summary>
public static partial class RougeL
{
    [GeneratedRegex("[^a-z0-9]+")]
    private static partial Regex NonAlphanumeric();

    public static string[] Tokenize(string text) =>
        NonAlphanumeric().Replace(text.ToLowerInvariant(), " ").Split(' ', StringSplitOptions.RemoveEmptyEntries);

    public static RougeScore Score(string target, string prediction)
    {
        var t = Tokenize(target);
        var p = Tokenize(prediction);
        if (t.Length == 0 || p.Length == 0) return new RougeScore(0, 0, 0);
        int lcs = LongestCommonSubsequence(t, p);
        double precision = (double)lcs / p.Length, recall = (double)lcs / t.Length;
        double f = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0;
        return new RougeScore(precision, recall, f);
    }

    /// <summary>The mean ROUGE-L F-measure over (reference, prediction) pairs.</summary>
    public static double CorpusF(IReadOnlyList<string> references, IReadOnlyList<string> predictions)
    {
        if (references.Count != predictions.Count) throw new ArgumentException($"ROUGE-L: {references.Count} references for {predictions.Count} predictions.");
        if (references.Count == 0) return 0;
        double sum = 0;
        for (int i = 0; i < references.Count; i++) sum += Score(references[i], predictions[i]).FMeasure;
        return sum / references.Count;
    }

    public static int LongestCommonSubsequence(string[] a, string[] b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (int i = 1; i <= a.Length; i++)
        {
            for (int j = 1; j <= b.Length; j++)
                current[j] = a[i - 1] == b[j - 1] ? previous[j - 1] + 1 : Math.Max(previous[j], current[j - 1]);
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }
}
