namespace PeftSharp.Models.Generation;

/// <summary>
/// Turns a stream of token ids into printable text pieces, as transformers' TextStreamer does: the ids
/// since the last newline are decoded together (so decoders that join tokens see whole words) and only
/// the new characters are returned; text ending in an incomplete UTF-8 sequence (U+FFFD) is held back.
/// </summary>
public sealed class StreamingDecoder(Func<int[], string> decode)
{
    private readonly List<int> _cache = [];
    private int _printed;

    /// <summary>Adds a token; returns the text that is now safe to print (possibly empty).</summary>
    public string Push(int tokenId)
    {
        _cache.Add(tokenId);
        string text = decode(_cache.ToArray());
        if (text.Length > 0 && text[^1] == '\uFFFD') return "";
        string piece = text.Length > _printed ? text[_printed..] : "";
        if (text.EndsWith('\n'))
        {
            _cache.Clear();
            _printed = 0;
        }
        else _printed = Math.Max(_printed, text.Length);
        return piece;
    }

    /// <summary>Whatever was held back (an incomplete character at the very end), once generation ends.</summary>
    public string Flush()
    {
        string text = _cache.Count == 0 ? "" : decode(_cache.ToArray());
        string rest = text.Length > _printed ? text[_printed..] : "";
        _cache.Clear();
        _printed = 0;
        return rest;
    }
}
