using System.Buffers;
using System.Text;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>A token of tokenizer.json's added_tokens, matched in the text before the model sees it.</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool LStrip = false, bool RStrip = false,
    bool SingleWord = false, bool Normalized = false);

/// <summary>
/// Finds added tokens in text the way Hugging Face does: leftmost match first, the longest one where
/// several start at the same place, with lstrip/rstrip widening the match over whitespace and
/// single_word refusing matches inside words.
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, (string Pattern, AddedToken Token)[]> _byFirstChar;
    private readonly SearchValues<char> _firstChars;

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> tokens)
    {
        _byFirstChar = tokens.Where(t => t.Pattern.Length > 0)
            .GroupBy(t => t.Pattern[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Pattern.Length).ToArray());
        _firstChars = SearchValues.Create(_byFirstChar.Keys.ToArray());
    }

    public bool IsEmpty => _byFirstChar.Count == 0;

    /// <summary>Covers <paramref name="text"/> with pieces (start, end, token or null for plain text).</summary>
    public void Split(string text, List<(int Start, int End, AddedToken? Token)> output)
    {
        int startOffset = 0, pos = 0;
        while (pos < text.Length)
        {
            int rel = text.AsSpan(pos).IndexOfAny(_firstChars);
            if (rel < 0) break;
            int i = pos + rel;
            AddedToken? found = null;
            int length = 0;
            foreach (var (pattern, token) in _byFirstChar[text[i]])
                if (text.AsSpan(i).StartsWith(pattern, StringComparison.Ordinal)) { found = token; length = pattern.Length; break; }
            if (found == null) { pos = i + 1; continue; }
            int start = i, stop = i + length;
            pos = stop;
            if (found.SingleWord && (IsWordBefore(text, start) || IsWordAfter(text, stop))) continue;
            if (found.LStrip)
            {
                int s = start;
                while (s > 0 && char.IsWhiteSpace(text[s - 1])) s--;
                start = Math.Max(s, startOffset);
            }
            if (found.RStrip)
            {
                while (stop < text.Length && char.IsWhiteSpace(text[stop])) stop++;
                pos = stop;
            }
            if (startOffset < start) output.Add((startOffset, start, null));
            output.Add((start, stop, found));
            startOffset = stop;
        }
        if (startOffset < text.Length || text.Length == 0) output.Add((startOffset, text.Length, null));
    }

    private static bool IsWordBefore(string text, int index) =>
        index > 0 && Rune.TryGetRuneAt(text, char.IsLowSurrogate(text[index - 1]) && index > 1 ? index - 2 : index - 1, out var r) && IsWordChar(r);

    private static bool IsWordAfter(string text, int index) =>
        index < text.Length && Rune.TryGetRuneAt(text, index, out var r) && IsWordChar(r);

    private static bool IsWordChar(Rune r) => Rune.IsLetterOrDigit(r) || r.Value == '_';
}
