using System.Globalization;
using System.Text;

namespace PeftSharp.Formats.ChatTemplates;

internal enum TokenKind { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, Eof }

internal readonly record struct Token(TokenKind Kind, string Value, int Line, object? Literal = null)
{
    public bool IsOp(string op) => Kind == TokenKind.Operator && Value == op;
    public bool IsName(string name) => Kind == TokenKind.Name && Value == name;

    public string Describe() => Kind switch
    {
        TokenKind.Name or TokenKind.Operator => $"'{Value}'",
        TokenKind.String => "a string",
        TokenKind.Integer or TokenKind.Float => "a number",
        TokenKind.Text => "template text",
        TokenKind.VarBegin => "'{{'",
        TokenKind.VarEnd => "end of print statement '}}'",
        TokenKind.BlockBegin => "'{%'",
        TokenKind.BlockEnd => "end of statement block '%}'",
        _ => "end of template",
    };
}

/// <summary>
/// Splits a Jinja2 template into text and tag tokens the way Jinja2's lexer does with the options
/// transformers sets: newlines normalised to \n and one trailing newline dropped
/// (keep_trailing_newline=False); <c>{%-</c>/<c>{{-</c>/<c>{#-</c> strip all whitespace before the tag and
/// <c>-%}</c>/<c>-}}</c>/<c>-#}</c> all whitespace after it; trim_blocks drops the first newline after a
/// block or comment tag (not after <c>+%}</c>); lstrip_blocks removes spaces and tabs between the start of
/// a line and a block or comment tag (not a <c>{{</c>, nor a tag opened with <c>{%+</c>).
/// Comments vanish, <c>{% raw %}</c> bodies become text.
/// </summary>
internal sealed class TemplateLexer
{
    private readonly string _src;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private int _line = 1;

    private TemplateLexer(string source)
    {
        var s = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (s.EndsWith('\n')) s = s[..^1];
        _src = s;
    }

    public static List<Token> Tokenize(string source)
    {
        var lexer = new TemplateLexer(source);
        lexer.Run();
        return lexer._tokens;
    }

    private ChatTemplateException Error(string message) => new($"Chat template syntax error at line {_line}: {message}", _line);

    private void Run()
    {
        while (true)
        {
            int tag = FindTagStart(_pos);
            if (tag < 0)
            {
                if (_pos < _src.Length) _tokens.Add(new Token(TokenKind.Text, _src[_pos..], _line));
                break;
            }
            char kind = _src[tag + 1];
            char sign = tag + 2 < _src.Length && (_src[tag + 2] == '-' || _src[tag + 2] == '+') ? _src[tag + 2] : '\0';
            bool lineStarting = _pos == 0 || _src[_pos - 1] == '\n';
            EmitText(_src.AsSpan(_pos, tag - _pos), sign, kind != '{', lineStarting);
            _pos = tag + 2 + (sign != '\0' ? 1 : 0);
            if (kind == '#') LexComment();
            else if (kind == '%' && TryLexRaw()) { }
            else LexTag(kind == '{');
        }
        _tokens.Add(new Token(TokenKind.Eof, "", _line));
    }

    private int FindTagStart(int from)
    {
        for (int i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
        {
            char c = _src[i + 1];
            if (c == '{' || c == '%' || c == '#') return i;
        }
        return -1;
    }

    /// <summary>Emits the text before a tag after applying '-' (rstrip) or lstrip_blocks.</summary>
    private void EmitText(ReadOnlySpan<char> text, char sign, bool lstripApplies, bool lineStarting)
    {
        int newlines = text.Count('\n');
        if (sign == '-') text = text.TrimEnd();
        else if (sign != '+' && lstripApplies)
        {
            int lpos = text.LastIndexOf('\n') + 1;
            if ((lpos > 0 || lineStarting) && IsAllWhitespace(text[lpos..])) text = text[..lpos];
        }
        if (!text.IsEmpty) _tokens.Add(new Token(TokenKind.Text, text.ToString(), _line));
        _line += newlines;
    }

    private static bool IsAllWhitespace(ReadOnlySpan<char> s)
    {
        foreach (var c in s) if (!char.IsWhiteSpace(c)) return false;
        return true;
    }

    /// <summary>After a block or comment end: '-' eats all whitespace, '+' nothing, plain: one newline (trim_blocks).</summary>
    private void AfterBlockEnd(char endSign)
    {
        if (endSign == '-') SkipWhitespace();
        else if (endSign != '+' && _pos < _src.Length && _src[_pos] == '\n') { _pos++; _line++; }
    }

    private void SkipWhitespace()
    {
        while (_pos < _src.Length && char.IsWhiteSpace(_src[_pos]))
        {
            if (_src[_pos] == '\n') _line++;
            _pos++;
        }
    }

    private void LexComment()
    {
        int end = _src.IndexOf("#}", _pos, StringComparison.Ordinal);
        if (end < 0) throw Error("missing end of comment tag '#}'");
        char endSign = end > _pos && (_src[end - 1] == '-' || _src[end - 1] == '+') ? _src[end - 1] : '\0';
        _line += _src.AsSpan(_pos, end - _pos).Count('\n');
        _pos = end + 2;
        AfterBlockEnd(endSign);
    }

    /// <summary>{% raw %}...{% endraw %}: the body is text, with the endraw tag's whitespace control applied.</summary>
    private bool TryLexRaw()
    {
        int p = _pos;
        while (p < _src.Length && char.IsWhiteSpace(_src[p])) p++;
        if (string.CompareOrdinal(_src, p, "raw", 0, 3) != 0) return false;
        p += 3;
        while (p < _src.Length && char.IsWhiteSpace(_src[p])) p++;
        bool dash = p < _src.Length && _src[p] == '-';
        if (string.CompareOrdinal(_src, dash ? p + 1 : p, "%}", 0, 2) != 0) return false;
        _line += _src.AsSpan(_pos, p - _pos).Count('\n');
        _pos = p + (dash ? 3 : 2);
        if (dash) SkipWhitespace();
        for (int search = _pos; ;)
        {
            int tag = _src.IndexOf("{%", search, StringComparison.Ordinal);
            if (tag < 0) throw Error("missing end of raw directive '{% endraw %}'");
            int q = tag + 2;
            char sign = q < _src.Length && (_src[q] == '-' || _src[q] == '+') ? _src[q] : '\0';
            if (sign != '\0') q++;
            while (q < _src.Length && char.IsWhiteSpace(_src[q])) q++;
            if (string.CompareOrdinal(_src, q, "endraw", 0, 6) != 0) { search = tag + 2; continue; }
            q += 6;
            while (q < _src.Length && char.IsWhiteSpace(_src[q])) q++;
            char endSign = q < _src.Length && (_src[q] == '-' || _src[q] == '+') ? _src[q] : '\0';
            if (string.CompareOrdinal(_src, endSign != '\0' ? q + 1 : q, "%}", 0, 2) != 0) { search = tag + 2; continue; }
            bool lineStarting = _src[_pos - 1] == '\n';
            EmitText(_src.AsSpan(_pos, tag - _pos), sign, true, lineStarting);
            _line += _src.AsSpan(tag, q - tag).Count('\n');
            _pos = q + (endSign != '\0' ? 3 : 2);
            AfterBlockEnd(endSign);
            return true;
        }
    }

    private void LexTag(bool isVariable)
    {
        _tokens.Add(new Token(isVariable ? TokenKind.VarBegin : TokenKind.BlockBegin, "", _line));
        int depth = 0;
        while (true)
        {
            SkipWhitespace();
            if (_pos >= _src.Length) throw Error(isVariable ? "unexpected end of template, expected '}}'" : "unexpected end of template, expected '%}'");
            if (depth == 0 && TryTagEnd(isVariable)) return;
            char c = _src[_pos];
            if (char.IsAsciiDigit(c)) LexNumber();
            else if (char.IsLetter(c) || c == '_') LexName();
            else if (c == '\'' || c == '"') LexString(c);
            else LexOperator(ref depth);
        }
    }

    private bool TryTagEnd(bool isVariable)
    {
        string close = isVariable ? "}}" : "%}";
        char sign = _src[_pos] == '-' || (!isVariable && _src[_pos] == '+') ? _src[_pos] : '\0';
        int at = sign != '\0' ? _pos + 1 : _pos;
        if (string.CompareOrdinal(_src, at, close, 0, 2) != 0) return false;
        _tokens.Add(new Token(isVariable ? TokenKind.VarEnd : TokenKind.BlockEnd, "", _line));
        _pos = at + 2;
        if (isVariable) { if (sign == '-') SkipWhitespace(); }
        else AfterBlockEnd(sign);
        return true;
    }

    private void LexName()
    {
        int start = _pos;
        while (_pos < _src.Length && (char.IsLetterOrDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
        _tokens.Add(new Token(TokenKind.Name, _src[start.._pos], _line));
    }

    private void LexNumber()
    {
        int start = _pos;
        bool isFloat = false;
        ScanDigits();
        bool mayBeFloat = start == 0 || _src[start - 1] != '.';
        if (mayBeFloat && _pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            _pos++;
            ScanDigits();
            isFloat = true;
        }
        if (mayBeFloat && _pos < _src.Length && (_src[_pos] == 'e' || _src[_pos] == 'E'))
        {
            int save = _pos++;
            if (_pos < _src.Length && (_src[_pos] == '+' || _src[_pos] == '-')) _pos++;
            if (_pos < _src.Length && char.IsAsciiDigit(_src[_pos])) { ScanDigits(); isFloat = true; }
            else _pos = save;
        }
        string text = _src[start.._pos].Replace("_", "");
        if (isFloat)
            _tokens.Add(new Token(TokenKind.Float, text, _line, double.Parse(text, CultureInfo.InvariantCulture)));
        else if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            _tokens.Add(new Token(TokenKind.Integer, text, _line, value));
        else throw Error($"integer literal {text} is out of range");
    }

    private void ScanDigits()
    {
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || (_src[_pos] == '_' && _pos + 1 < _src.Length && char.IsAsciiDigit(_src[_pos + 1])))) _pos++;
    }

    private void LexString(char quote)
    {
        int startLine = _line;
        var sb = new StringBuilder();
        int p = _pos + 1;
        while (true)
        {
            if (p >= _src.Length) throw Error("unterminated string literal");
            char c = _src[p];
            if (c == quote) break;
            if (c == '\n') _line++;
            if (c != '\\') { sb.Append(c); p++; continue; }
            if (p + 1 >= _src.Length) throw Error("unterminated string literal");
            char e = _src[p + 1];
            p += 2;
            switch (e)
            {
                case '\n': _line++; break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case 'a': sb.Append('\a'); break;
                case 'x': sb.Append((char)ParseHex(ref p, 2)); break;
                case 'u': sb.Append((char)ParseHex(ref p, 4)); break;
                case 'U': sb.Append(char.ConvertFromUtf32(ParseHex(ref p, 8))); break;
                case >= '0' and <= '7':
                    int v = e - '0';
                    for (int k = 0; k < 2 && p < _src.Length && _src[p] is >= '0' and <= '7'; k++) v = v * 8 + (_src[p++] - '0');
                    sb.Append((char)v);
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }
        _tokens.Add(new Token(TokenKind.String, sb.ToString(), startLine, sb.ToString()));
        _pos = p + 1;
    }

    private int ParseHex(ref int p, int digits)
    {
        if (p + digits > _src.Length || !int.TryParse(_src.AsSpan(p, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int v))
            throw Error($"truncated \\x/\\u escape in a string literal (expected {digits} hex digits)");
        p += digits;
        return v;
    }

    private static readonly string[] TwoCharOps = ["//", "**", "==", "!=", ">=", "<="];

    private void LexOperator(ref int depth)
    {
        foreach (var op in TwoCharOps)
        {
            if (string.CompareOrdinal(_src, _pos, op, 0, 2) == 0)
            {
                _tokens.Add(new Token(TokenKind.Operator, op, _line));
                _pos += 2;
                return;
            }
        }
        char c = _src[_pos];
        if ("+-/*%~[](){}=.:|,;><".IndexOf(c) < 0) throw Error($"unexpected character '{c}'");
        if (c is '(' or '[' or '{') depth++;
        else if (c is ')' or ']' or '}')
        {
            if (depth == 0) throw Error($"unexpected '{c}'");
            depth--;
        }
        _tokens.Add(new Token(TokenKind.Operator, c.ToString(), _line));
        _pos++;
    }
}
