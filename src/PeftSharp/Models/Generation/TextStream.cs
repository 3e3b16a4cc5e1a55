using System.Text;

namespace PeftSharp.Models.Generation;

/// <summary>
/// The text of one generated sequence as it streams: tokens are decoded as <see cref="StreamingDecoder"/> does (whole words,
/// incomplete characters held back) and, with stop strings, the last characters that could still begin one are held back
/// too, so no caller ever prints text a stop string later cuts. The same text feeds <see cref="Generator"/>'s stop check
/// (<see cref="LastPiece"/>), so what is printed is what the generator returns.
/// </summary>
public sealed class TextStream
{
    private readonly StreamingDecoder _decoder;
    private readonly IReadOnlyList<string> _stops;
    private readonly int _holdBack;
    private readonly StringBuilder _text = new();
    private int _emitted;
    private int _cut = -1;

    public TextStream(Func<int[], string> decode, IReadOnlyList<string>? stops = null)
    {
        _decoder = new StreamingDecoder(decode);
        _stops = stops ?? [];
        _holdBack = _stops.Count == 0 ? 0 : _stops.Max(s => s.Length) - 1;
    }

    /// <summary>True once the text contains a stop string (it is cut before it).</summary>
    public bool Stopped => _cut >= 0;

    /// <summary>The text so far (cut before a stop string).</summary>
    public string Text => _cut >= 0 ? _text.ToString(0, _cut) : _text.ToString();

    /// <summary>The decoded piece the last <see cref="Push"/> added (what a stop check sees).</summary>
    public string LastPiece { get; private set; } = "";

    /// <summary>Adds a token; returns the text now safe to show (possibly empty). After a stop nothing more is returned.</summary>
    public string Push(int tokenId)
    {
        LastPiece = _cut >= 0 ? "" : _decoder.Push(tokenId);
        Append(LastPiece);
        return Ready(final: false);
    }

    /// <summary>Ends the stream: whatever was held back (up to a stop string, if one appeared).</summary>
    public string Finish()
    {
        if (_cut < 0) Append(_decoder.Flush());
        return Ready(final: true);
    }

    private void Append(string piece)
    {
        if (piece.Length == 0 || _cut >= 0) return;
        int searchFrom = Math.Max(0, _text.Length - _holdBack);
        _text.Append(piece);
        if (_stops.Count == 0) return;
        string tail = _text.ToString(searchFrom, _text.Length - searchFrom);
        int cut = -1;
        foreach (var stop in _stops)
        {
            int at = tail.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        if (cut >= 0) _cut = searchFrom + cut;
    }

    private string Ready(bool final)
    {
        int end = _cut >= 0 ? _cut : final ? _text.Length : Math.Max(_emitted, _text.Length - _holdBack);
        if (end <= _emitted) return "";
        string ready = _text.ToString(_emitted, end - _emitted);
        _emitted = end;
        return ready;
    }
}
