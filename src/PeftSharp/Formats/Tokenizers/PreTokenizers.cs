using System.Globalization;
using System.Text;
using System.Text.Json;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>A piece of text on its way to the model; <see cref="AtStart"/> when it begins at offset 0 of the input.</summary>
internal readonly record struct Segment(string Text, bool AtStart);

/// <summary>How a split keeps the matched delimiters (Hugging Face's SplitDelimiterBehavior).</summary>
internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

/// <summary>A Hugging Face pre-tokenizer: splits normalized text into words (and may rewrite them).</summary>
internal abstract class PreTokenizer
{
    protected abstract void Split(in Segment segment, List<Segment> output);

    public virtual void PreTokenize(List<Segment> segments)
    {
        var input = segments.ToArray();
        segments.Clear();
        foreach (var s in input) Split(s, segments);
    }

    /// <summary>
    /// Splits <paramref name="segment"/> at the spans (start, end, isMatch) that cover it, keeping
    /// the matches as <paramref name="behavior"/> says, dropping empty pieces.
    /// </summary>
    protected static void Emit(Segment segment, List<(int Start, int End, bool IsMatch)> spans, SplitBehavior behavior, List<Segment> output)
    {
        string text = segment.Text;
        int pendingStart = -1, pendingEnd = -1;
        bool previousMatch = false;
        switch (behavior)
        {
            case SplitBehavior.Removed:
                foreach (var (s, e, m) in spans) if (!m) Add(s, e);
                break;
            case SplitBehavior.Isolated:
                foreach (var (s, e, _) in spans) Add(s, e);
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var (s, e, m) in spans)
                {
                    if (m && !previousMatch && pendingStart >= 0) pendingEnd = e;
                    else { Flush(); pendingStart = s; pendingEnd = e; }
                    previousMatch = m;
                }
                Flush();
                break;
            case SplitBehavior.MergedWithNext:
            {
                var reversed = new List<(int Start, int End)>();
                for (int i = spans.Count - 1; i >= 0; i--)
                {
                    var (s, e, m) = spans[i];
                    if (m && !previousMatch && reversed.Count > 0) reversed[^1] = (s, reversed[^1].End);
                    else reversed.Add((s, e));
                    previousMatch = m;
                }
                for (int i = reversed.Count - 1; i >= 0; i--) Add(reversed[i].Start, reversed[i].End);
                break;
            }
            case SplitBehavior.Contiguous:
                foreach (var (s, e, m) in spans)
                {
                    if (m == previousMatch && pendingStart >= 0) pendingEnd = e;
                    else { Flush(); pendingStart = s; pendingEnd = e; }
                    previousMatch = m;
                }
                Flush();
                break;
        }

        void Flush()
        {
            if (pendingStart >= 0) Add(pendingStart, pendingEnd);
            pendingStart = -1;
        }

        void Add(int s, int e)
        {
            if (e > s) output.Add(new Segment(text.Substring(s, e - s), segment.AtStart && s == 0));
        }
    }

    /// <summary>Spans of a regex's matches and the gaps between them, as Hugging Face's find_matches makes them.</summary>
    protected static void RegexSpans(SplitRegex regex, string text, List<(int, int, bool)> spans)
    {
        var matches = new List<(int Start, int End)>();
        regex.Matches(text, matches);
        int previous = 0;
        foreach (var (s, e) in matches)
        {
            if (previous != s) spans.Add((previous, s, false));
            spans.Add((s, e, true));
            previous = e;
        }
        if (previous != text.Length) spans.Add((previous, text.Length, false));
    }

    /// <summary>Spans where each character satisfying <paramref name="predicate"/> is a match of its own.</summary>
    protected static void CharSpans(string text, Func<int, bool> predicate, List<(int, int, bool)> spans)
    {
        int lastOffset = 0, i = 0;
        while (i < text.Length)
        {
            var rune = Rune.GetRuneAt(text, i);
            int len = rune.Utf16SequenceLength;
            if (predicate(rune.Value))
            {
                if (lastOffset < i) spans.Add((lastOffset, i, false));
                spans.Add((i, i + len, true));
                lastOffset = i + len;
            }
            i += len;
        }
        if (text.Length > lastOffset) spans.Add((lastOffset, text.Length, false));
    }

    public static PreTokenizer? FromJson(JsonElement e, string file)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = Json.String(e, "type", file);
        switch (type)
        {
            case "Sequence":
                return new SequencePreTokenizer(Json.Array(e, "pretokenizers", file).EnumerateArray()
                    .Select(x => FromJson(x, file) ?? throw new PeftSharpException($"{file}: a null pre-tokenizer inside a Sequence.")).ToArray());
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Json.Bool(e, "add_prefix_space", true), Json.Bool(e, "use_regex", true));
            case "Split":
            {
                var pattern = Json.Object(e, "pattern", file);
                bool literal = pattern.TryGetProperty("String", out var str);
                string p = literal ? Json.String(pattern, "String", file) : Json.String(pattern, "Regex", file);
                return new SplitPreTokenizer(new SplitRegex(p, literal, file), ParseBehavior(Json.String(e, "behavior", file), file), Json.Bool(e, "invert", false));
            }
            case "Digits":
                return new DigitsPreTokenizer(Json.Bool(e, "individual_digits", false));
            case "Metaspace":
                return new MetaspacePreTokenizer(Json.Replacement(e, file), Json.PrependScheme(e, file), Json.Bool(e, "split", true));
            case "WhitespaceSplit":
                return new SplitPreTokenizer(new SplitRegex(@"\s+", false), SplitBehavior.Removed, false);
            case "Whitespace":
                return new SplitPreTokenizer(new SplitRegex(@"\w+|[^\w\s]+", false), SplitBehavior.Removed, true);
            default:
                throw new PeftSharpException($"{file}: pre-tokenizer type '{type}' is not supported (expected ByteLevel, Split, Digits, Metaspace, Whitespace, WhitespaceSplit or Sequence).");
        }
    }

    internal static SplitBehavior ParseBehavior(string name, string file) => name switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new PeftSharpException($"{file}: split behavior '{name}' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous."),
    };
}

internal sealed class SequencePreTokenizer(PreTokenizer[] children) : PreTokenizer
{
    public PreTokenizer[] Children => children;

    protected override void Split(in Segment segment, List<Segment> output) => throw new InvalidOperationException();

    public override void PreTokenize(List<Segment> segments)
    {
        foreach (var child in children) child.PreTokenize(segments);
    }
}

internal sealed class SplitPreTokenizer(SplitRegex regex, SplitBehavior behavior, bool invert) : PreTokenizer
{
    /// <summary>The regex when this split keeps matches and gaps alike as words (Isolated, not inverted).</summary>
    public SplitRegex? IsolatingRegex => behavior == SplitBehavior.Isolated && !invert ? regex : null;

    protected override void Split(in Segment segment, List<Segment> output)
    {
        var spans = new List<(int Start, int End, bool IsMatch)>();
        RegexSpans(regex, segment.Text, spans);
        if (invert)
            for (int i = 0; i < spans.Count; i++) spans[i] = (spans[i].Start, spans[i].End, !spans[i].IsMatch);
        Emit(segment, spans, behavior, output);
    }
}

internal sealed class DigitsPreTokenizer(bool individualDigits) : PreTokenizer
{
    protected override void Split(in Segment segment, List<Segment> output)
    {
        var spans = new List<(int Start, int End, bool IsMatch)>();
        CharSpans(segment.Text, IsNumeric, spans);
        Emit(segment, spans, individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous, output);
    }

    private static bool IsNumeric(int cp) => CharUnicodeInfo.GetUnicodeCategory(cp) is
        UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;
}

/// <summary>Hugging Face's prepend_scheme of Metaspace.</summary>
internal enum PrependScheme { Always, First, Never }

internal sealed class MetaspacePreTokenizer(char replacement, PrependScheme scheme, bool split) : PreTokenizer
{
    protected override void Split(in Segment segment, List<Segment> output)
    {
        string text = segment.Text.Replace(' ', replacement);
        bool startsWith = text.Length > 0 && text[0] == replacement;
        if (!startsWith && (scheme == PrependScheme.Always || (scheme == PrependScheme.First && segment.AtStart)))
            text = replacement + text;
        var rewritten = new Segment(text, segment.AtStart);
        if (!split)
        {
            if (text.Length > 0) output.Add(rewritten);
            return;
        }
        var spans = new List<(int Start, int End, bool IsMatch)>();
        CharSpans(text, cp => cp == replacement, spans);
        Emit(rewritten, spans, SplitBehavior.MergedWithNext, output);
    }
}

/// <summary>GPT-2's pre-tokenizer: optional prefix space, GPT-2's regex, then bytes as byte-level characters.</summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizer
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    private static readonly SplitRegex Gpt2Regex = new(Gpt2Pattern, false);

    public bool AddPrefixSpace => addPrefixSpace;
    public bool UseRegex => useRegex;
    public static SplitRegex Gpt2SplitRegex => Gpt2Regex;

    protected override void Split(in Segment segment, List<Segment> output)
    {
        var seg = segment;
        if (addPrefixSpace && (seg.Text.Length == 0 || seg.Text[0] != ' ')) seg = seg with { Text = " " + seg.Text };
        if (!useRegex)
        {
            if (seg.Text.Length > 0) output.Add(seg with { Text = Map(seg.Text) });
            return;
        }
        var pieces = new List<Segment>();
        var spans = new List<(int Start, int End, bool IsMatch)>();
        RegexSpans(Gpt2Regex, seg.Text, spans);
        Emit(seg, spans, SplitBehavior.Isolated, pieces);
        foreach (var p in pieces) output.Add(p with { Text = Map(p.Text) });
    }

    /// <summary>The byte-level spelling of <paramref name="text"/>'s UTF-8 bytes.</summary>
    public static string Map(string text)
    {
        int byteCount = Encoding.UTF8.GetByteCount(text);
        Span<byte> bytes = byteCount <= 1024 ? stackalloc byte[byteCount] : new byte[byteCount];
        Encoding.UTF8.GetBytes(text, bytes);
        Span<char> chars = byteCount <= 1024 ? stackalloc char[byteCount] : new char[byteCount];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteLevel.ByteToChar(bytes[i]);
        return new string(chars);
    }
}
