using System.Globalization;
using System.Text.RegularExpressions;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>
/// A pre-tokenizer regex matched the way Hugging Face tokenizers (Oniguruma, code points) matches it.
/// .NET regexes see UTF-16 code units, so a surrogate pair never matches \p{L} or \p{N}; text holding
/// astral characters is matched on a shadow string where each of them is one BMP character of the
/// same Unicode category, and the match bounds are mapped back.
/// A pattern comes from a downloaded tokenizer.json, so it may backtrack catastrophically (<c>(a+)+$</c>):
/// a pattern without lookarounds or backreferences runs on the non-backtracking engine (linear in the
/// text; it finds the same matches), and every pattern has a match timeout of <see cref="MatchTimeout"/>,
/// past which the error names the file and the pattern.
/// </summary>
internal sealed class SplitRegex
{
    /// <summary>The longest one match may take (the real tokenizers' patterns take microseconds).</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    private readonly Regex _regex;
    private readonly string _source;

    public SplitRegex(string pattern, bool literal, string source = "a built-in pre-tokenizer")
    {
        _source = source;
        string expression = literal ? Regex.Escape(pattern) : pattern;
        try { _regex = Create(expression); }
        catch (ArgumentException e) { throw new PeftSharpException($"{source}: the regex '{pattern}' is not valid: {e.Message}", e); }
    }

    /// <summary>The pattern as .NET sees it.</summary>
    public string Pattern => _regex.ToString();

    /// <summary>True when the pattern runs on the non-backtracking engine.</summary>
    public bool IsNonBacktracking => (_regex.Options & RegexOptions.NonBacktracking) != 0;

    private static Regex Create(string expression)
    {
        // Lookarounds, backreferences and atomic groups need backtracking; the engine refuses them.
        try { return new Regex(expression, RegexOptions.CultureInvariant | RegexOptions.NonBacktracking, MatchTimeout); }
        catch (NotSupportedException) { return new Regex(expression, RegexOptions.CultureInvariant | RegexOptions.Compiled, MatchTimeout); }
    }

    /// <summary>As <see cref="Matches(string, List{ValueTuple{int, int}})"/>; a match past the timeout is an error naming the file and pattern.</summary>
    public void Matches(string text, List<(int Start, int End)> output)
    {
        try { MatchesCore(text, output); }
        catch (RegexMatchTimeoutException)
        {
            throw new PeftSharpException($"{_source}: the regex '{_regex}' took longer than the limit of {MatchTimeout.TotalSeconds:0} s for one match on a text of {text.Length:N0} characters; the pattern backtracks catastrophically (rewrite it without nested repetition such as (a+)+).");
        }
    }

    /// <summary>Appends (start, end) of every non-empty-or-empty match of the regex in <paramref name="text"/>, left to right.</summary>
    private void MatchesCore(string text, List<(int Start, int End)> output)
    {
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            foreach (var m in _regex.EnumerateMatches(text)) output.Add((m.Index, m.Index + m.Length));
            return;
        }
        var shadow = new char[text.Length];
        var origin = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length; i++)
        {
            origin[n] = i;
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                shadow[n++] = Representative(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(c, text[i + 1])));
                i++;
            }
            else shadow[n++] = c;
        }
        origin[n] = text.Length;
        foreach (var m in _regex.EnumerateMatches(shadow.AsSpan(0, n)))
            output.Add((origin[m.Index], origin[m.Index + m.Length]));
    }

    private static char Representative(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u0100',
        UnicodeCategory.LowercaseLetter => '\u0101',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u4E00',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.SpaceSeparator => '\u3000',
        UnicodeCategory.LineSeparator => '\u2028',
        UnicodeCategory.ParagraphSeparator => '\u2029',
        UnicodeCategory.Control => '\u0001',
        UnicodeCategory.Format => '\u2060',
        UnicodeCategory.PrivateUse => '\uE000',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u2039',
        UnicodeCategory.FinalQuotePunctuation => '\u203A',
        UnicodeCategory.OtherPunctuation => '\u2020',
        UnicodeCategory.MathSymbol => '\u2200',
        UnicodeCategory.CurrencySymbol => '\u20A0',
        UnicodeCategory.ModifierSymbol => '\u02C2',
        UnicodeCategory.OtherSymbol => '\u2600',
        _ => '\u0378',
    };
}
