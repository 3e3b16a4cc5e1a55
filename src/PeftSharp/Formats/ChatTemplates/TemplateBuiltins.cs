using System.Globalization;
using System.Text;

namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// Jinja2's built-in filters and tests that chat templates use (with transformers' own
/// <c>tojson</c>), and the Python str/dict/list methods templates call (<c>.strip()</c>, <c>.items()</c>...).
/// </summary>
internal static class TemplateBuiltins
{
    private delegate object? Filter(object? value, List<object?> args, Dictionary<string, object?>? kwargs);

    private delegate bool Test(object? value, List<object?> args);

    public static bool HasFilter(string name) => Filters.ContainsKey(name);
    public static bool HasTest(string name) => Tests.ContainsKey(name);

    public static object? ApplyFilter(string name, object? value, List<object?> args, Dictionary<string, object?>? kwargs) =>
        Filters[name](value, args, kwargs);

    public static bool ApplyTest(string name, object? value, List<object?> args) => Tests[name](value, args);

    /// <summary>Argument <paramref name="index"/> by position, else by keyword, else the default.</summary>
    public static object? Arg(List<object?> args, Dictionary<string, object?>? kwargs, int index, string name, object? dflt = null)
    {
        if (index < args.Count) return args[index];
        if (kwargs != null && kwargs.TryGetValue(name, out var v)) return v;
        return dflt;
    }

    private static string Soft(object? v) => Py.Str(v);

    private static string RequireString(object? v, string what) =>
        v as string ?? throw Py.TypeError($"{what} expected a string, got '{Py.TypeName(v)}'");

    private static readonly Dictionary<string, Filter> Filters = new(StringComparer.Ordinal)
    {
        ["abs"] = (v, _, _) => v switch { long l => (object)Math.Abs(l), double d => Math.Abs(d), bool b => b ? 1L : 0L, _ => throw Py.TypeError($"bad operand type for abs(): '{Py.TypeName(v)}'") },
        ["attr"] = (v, a, k) => GetAttr(v, Soft(Arg(a, k, 0, "name"))),
        ["capitalize"] = (v, _, _) => Capitalize(Soft(v)),
        ["center"] = (v, a, k) =>
        {
            string s = Soft(v);
            long requested = (long)(Arg(a, k, 0, "width", 80L) ?? 80L);
            TemplateLimits.CheckString(requested, "center");
            int width = (int)requested, pad = width - s.Length;
            if (pad <= 0) return s;
            int left = pad / 2 + (pad & width & 1);
            return new string(' ', left) + s + new string(' ', pad - left);
        },
        ["count"] = (v, _, _) => Py.Length(v),
        ["default"] = Default,
        ["d"] = Default,
        ["dictsort"] = (v, a, k) =>
        {
            var d = v as Dictionary<string, object?> ?? throw Py.TypeError("dictsort expected a mapping");
            bool byValue = Soft(Arg(a, k, 1, "by", "key")) == "value";
            var items = d.Select(kv => (object?)new object?[] { kv.Key, kv.Value }).ToList();
            items.Sort((x, y) => Py.Compare(((object?[])x!)[byValue ? 1 : 0], ((object?[])y!)[byValue ? 1 : 0], "<"));
            if (Py.Truthy(Arg(a, k, 2, "reverse", false))) items.Reverse();
            return items;
        },
        ["e"] = (v, _, _) => HtmlEscape(Soft(v)),
        ["escape"] = (v, _, _) => HtmlEscape(Soft(v)),
        ["first"] = (v, _, _) => Py.Iterate(v).Take(1).DefaultIfEmpty(Undefined.Plain).First(),
        ["float"] = (v, a, k) => v switch
        {
            double d => d,
            long l => (double)l,
            bool b => b ? 1.0 : 0.0,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
            _ => Arg(a, k, 0, "default", 0.0),
        },
        ["indent"] = Indent,
        ["int"] = (v, a, k) => v switch
        {
            long l => l,
            bool b => b ? 1L : 0L,
            double d => (long)Math.Truncate(d),
            string s when long.TryParse(s.Trim().Replace("_", ""), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l) => l,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => (long)Math.Truncate(d),
            _ => Arg(a, k, 0, "default", 0L),
        },
        ["items"] = (v, _, _) => v switch
        {
            Undefined => new List<object?>(),
            Dictionary<string, object?> d => d.Select(kv => (object?)new object?[] { kv.Key, kv.Value }).ToList(),
            _ => throw Py.TypeError($"can only get item pairs from a mapping, not '{Py.TypeName(v)}'"),
        },
        ["join"] = (v, a, k) =>
        {
            string sep = Soft(Arg(a, k, 0, "d", ""));
            var attr = Arg(a, k, 1, "attribute");
            var items = Py.Iterate(v);
            if (attr != null) items = items.Select(x => GetAttr(x, Soft(attr)));
            return JoinChecked(sep, items.Select(Soft));
        },
        ["last"] = (v, _, _) => Py.ToList(v) is { Count: > 0 } l ? l[^1] : Undefined.Plain,
        ["length"] = (v, _, _) => Py.Length(v),
        ["list"] = (v, _, _) => Py.ToList(v),
        ["lower"] = (v, _, _) => Soft(v).ToLowerInvariant(),
        ["map"] = Map,
        ["max"] = (v, _, _) => MinMax(v, 1),
        ["min"] = (v, _, _) => MinMax(v, -1),
        ["reject"] = (v, a, k) => Select(v, a, false, false),
        ["rejectattr"] = (v, a, k) => Select(v, a, true, false),
        ["replace"] = (v, a, k) =>
        {
            string s = Soft(v), old = Soft(Arg(a, k, 0, "old")), repl = Soft(Arg(a, k, 1, "new"));
            var count = Arg(a, k, 2, "count");
            return ReplaceCount(s, old, repl, count == null ? -1 : (long)count);
        },
        ["reverse"] = (v, _, _) => v is string s ? new string(s.Reverse().ToArray()) : Py.ToList(v).AsEnumerable().Reverse().ToList(),
        ["round"] = (v, a, k) =>
        {
            int precision = (int)(long)(Arg(a, k, 0, "precision", 0L) ?? 0L);
            string method = Soft(Arg(a, k, 1, "method", "common"));
            double x = Py.ToDouble(v), scale = Math.Pow(10, precision);
            return method switch
            {
                "ceil" => Math.Ceiling(x * scale) / scale,
                "floor" => Math.Floor(x * scale) / scale,
                _ => Math.Round(x, precision, MidpointRounding.ToEven),
            };
        },
        ["safe"] = (v, _, _) => v,
        ["select"] = (v, a, k) => Select(v, a, false, true),
        ["selectattr"] = (v, a, k) => Select(v, a, true, true),
        ["sort"] = (v, a, k) =>
        {
            var items = Py.ToList(v);
            bool reverse = Py.Truthy(Arg(a, k, 0, "reverse", false));
            bool caseSensitive = Py.Truthy(Arg(a, k, 1, "case_sensitive", false));
            var attr = Arg(a, k, 2, "attribute");
            object? Key(object? x)
            {
                var y = attr == null ? x : GetAttr(x, Soft(attr));
                return !caseSensitive && y is string s ? s.ToLowerInvariant() : y;
            }
            var sorted = items.Select(x => (Key: Key(x), Item: x)).ToList();
            var ordered = sorted.OrderBy(p => p.Key, Comparer<object?>.Create((x, y) => Py.Compare(x, y, "<"))).Select(p => p.Item).ToList();
            if (reverse) ordered.Reverse();
            return ordered;
        },
        ["string"] = (v, _, _) => Soft(v),
        ["sum"] = (v, a, k) =>
        {
            var attr = Arg(a, k, 0, "attribute");
            object? total = Arg(a, k, 1, "start", 0L);
            foreach (var x in Py.Iterate(v)) total = Py.Binary("+", total, attr == null ? x : GetAttr(x, Soft(attr)));
            return total;
        },
        ["title"] = (v, _, _) => Title(Soft(v)),
        ["tojson"] = (v, a, k) =>
        {
            bool ascii = Py.Truthy(Arg(a, k, 0, "ensure_ascii", false));
            var indentArg = Arg(a, k, 1, "indent");
            string? indent = indentArg switch
            {
                null => null,
                long n when n > MaxIndent => throw TemplateLimits.Exceeded("tojson indent", $"{MaxIndent} spaces"),
                long n => new string(' ', (int)Math.Max(0, n)),
                string s when s.Length > MaxIndent => throw TemplateLimits.Exceeded("tojson indent", $"{MaxIndent} characters"),
                string s => s,
                _ => throw Py.TypeError("tojson indent must be an int or a string"),
            };
            string? itemSep = null, keySep = null;
            if (Arg(a, k, 2, "separators") is IList<object?> seps && seps.Count == 2) { itemSep = Soft(seps[0]); keySep = Soft(seps[1]); }
            return PyJson.Dumps(v, ascii, indent, itemSep, keySep, Py.Truthy(Arg(a, k, 3, "sort_keys", false)));
        },
        ["trim"] = (v, a, k) => Arg(a, k, 0, "chars") is string chars ? Soft(v).Trim(chars.ToCharArray()) : Soft(v).Trim(),
        ["unique"] = (v, _, _) =>
        {
            var result = new List<object?>();
            foreach (var x in Py.Iterate(v)) if (!result.Any(y => Py.Equals(x, y))) result.Add(x);
            return result;
        },
        ["upper"] = (v, _, _) => Soft(v).ToUpperInvariant(),
        ["wordcount"] = (v, _, _) => (long)Soft(v).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length,
    };

    private static object? Default(object? v, List<object?> a, Dictionary<string, object?>? k)
    {
        bool boolean = Py.Truthy(Arg(a, k, 1, "boolean", false));
        return v is Undefined || (boolean && !Py.Truthy(v)) ? Arg(a, k, 0, "default_value", "") : v;
    }

    private static object? Indent(object? v, List<object?> a, Dictionary<string, object?>? k)
    {
        var width = Arg(a, k, 0, "width", 4L);
        string indention = width is string ws ? ws
            : width is long n ? (n > MaxIndent ? throw TemplateLimits.Exceeded("indent width", $"{MaxIndent} spaces") : new string(' ', (int)Math.Max(0, n)))
            : throw Py.TypeError($"indent width must be an int or a string, got '{Py.TypeName(width)}'");
        TemplateLimits.CheckString((long)Soft(v).Length * (indention.Length + 1), "indent");
        bool first = Py.Truthy(Arg(a, k, 1, "first", false)), blank = Py.Truthy(Arg(a, k, 2, "blank", false));
        var lines = SplitLines(Soft(v) + "\n");
        string rv;
        if (blank) rv = string.Join("\n" + indention, lines);
        else
        {
            rv = lines[0];
            if (lines.Count > 1) rv += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indention + l : l));
        }
        return first ? indention + rv : rv;
    }

    private static object? Map(object? v, List<object?> a, Dictionary<string, object?>? k)
    {
        if (a.Count == 0 && k != null && k.TryGetValue("attribute", out var attr))
        {
            k.TryGetValue("default", out var dflt);
            return Py.Iterate(v).Select(x =>
            {
                var r = GetAttr(x, Soft(attr));
                return r is Undefined && k.ContainsKey("default") ? dflt : r;
            }).ToList();
        }
        if (a.Count == 0) throw Py.TypeError("map requires a filter name or attribute=");
        string filter = Soft(a[0]);
        if (!HasFilter(filter)) throw new ChatTemplateException($"no filter named '{filter}'");
        var rest = a.Skip(1).ToList();
        return Py.Iterate(v).Select(x => ApplyFilter(filter, x, rest, k)).ToList();
    }

    private static object? Select(object? v, List<object?> a, bool byAttribute, bool keep)
    {
        int at = 0;
        string? attr = byAttribute ? Soft(a.Count > 0 ? a[at++] : throw Py.TypeError("selectattr/rejectattr need an attribute name")) : null;
        string? test = a.Count > at ? Soft(a[at++]) : null;
        if (test != null && !HasTest(test)) throw new ChatTemplateException($"no test named '{test}'");
        var testArgs = a.Skip(at).ToList();
        return Py.Iterate(v).Where(x =>
        {
            var y = attr == null ? x : GetAttr(x, attr);
            bool ok = test == null ? Py.Truthy(y) : ApplyTest(test, y, testArgs);
            return ok == keep;
        }).ToList();
    }

    private static object? MinMax(object? v, int sign)
    {
        var items = Py.ToList(v);
        if (items.Count == 0) return Undefined.Plain;
        var best = items[0];
        foreach (var x in items.Skip(1)) if (Py.Compare(x, best, "<") * sign > 0) best = x;
        return best;
    }

    /// <summary>The list a split is filling, refused past <see cref="TemplateLimits.MaxListLength"/> items.</summary>
    private static List<T> Grow<T>(List<T> list)
    {
        if (list.Count >= TemplateLimits.MaxListLength) TemplateLimits.CheckList(list.Count + 1L, "split");
        return list;
    }

    /// <summary>Indentation wider than this (tojson's indent, the indent filter's width) is refused.</summary>
    private const int MaxIndent = 1024;

    private static string JoinChecked(string separator, IEnumerable<string> items)
    {
        var sb = new StringBuilder();
        bool first = true;
        foreach (var item in items)
        {
            if (!first) sb.Append(separator);
            first = false;
            TemplateLimits.CheckString((long)sb.Length + item.Length, "join");
            sb.Append(item);
        }
        return sb.ToString();
    }

    private static string ReplaceCount(string s, string old, string repl, long count)
    {
        var sb = new StringBuilder();
        int pos = 0;
        for (long n = 0; count < 0 || n < count; n++)
        {
            TemplateLimits.CheckString((long)sb.Length + repl.Length + s.Length - pos, "replace");
            int i = old.Length == 0 ? (pos <= s.Length && n <= s.Length ? pos : -1) : s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0) break;
            sb.Append(s, pos, i - pos).Append(repl);
            if (old.Length == 0) { if (i < s.Length) sb.Append(s[i]); pos = i + 1; if (pos > s.Length) break; }
            else pos = i + old.Length;
        }
        if (pos <= s.Length) sb.Append(s, pos, s.Length - pos);
        return sb.ToString();
    }

    private static string HtmlEscape(string s) =>
        s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");

    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Jinja2's title filter: words start after whitespace or one of -({[&lt;.</summary>
    private static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool start = true;
        foreach (char c in s)
        {
            sb.Append(start ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            start = char.IsWhiteSpace(c) || "-({[<".IndexOf(c) >= 0;
        }
        return sb.ToString();
    }

    private static List<string> SplitLines(string s)
    {
        var lines = new List<string>();
        int start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')
            {
                Grow(lines).Add(s[start..i]);
                if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
                start = i + 1;
            }
        }
        if (start < s.Length) Grow(lines).Add(s[start..]);
        return lines;
    }

    private static readonly Dictionary<string, Test> Tests = new(StringComparer.Ordinal)
    {
        ["defined"] = (v, _) => v is not Undefined,
        ["undefined"] = (v, _) => v is Undefined,
        ["none"] = (v, _) => v == null,
        ["boolean"] = (v, _) => v is bool,
        ["true"] = (v, _) => v is true,
        ["false"] = (v, _) => v is false,
        ["integer"] = (v, _) => v is long,
        ["float"] = (v, _) => v is double,
        ["number"] = (v, _) => v is long or double or bool,
        ["string"] = (v, _) => v is string,
        ["mapping"] = (v, _) => v is Dictionary<string, object?>,
        ["iterable"] = (v, _) => v is string or IList<object?> or Dictionary<string, object?> or Undefined,
        ["sequence"] = (v, _) => v is string or IList<object?> or Dictionary<string, object?>,
        ["callable"] = (v, _) => v is PyFunction or Macro,
        ["sameas"] = (v, a) => ReferenceEquals(v, a[0]) || (v == null && a[0] == null) || (v is bool x && a[0] is bool y && x == y),
        ["eq"] = (v, a) => Py.Equals(v, a[0]),
        ["equalto"] = (v, a) => Py.Equals(v, a[0]),
        ["=="] = (v, a) => Py.Equals(v, a[0]),
        ["ne"] = (v, a) => !Py.Equals(v, a[0]),
        ["!="] = (v, a) => !Py.Equals(v, a[0]),
        ["lt"] = (v, a) => Py.Compare(v, a[0], "<") < 0,
        ["lessthan"] = (v, a) => Py.Compare(v, a[0], "<") < 0,
        ["<"] = (v, a) => Py.Compare(v, a[0], "<") < 0,
        ["le"] = (v, a) => Py.Compare(v, a[0], "<=") <= 0,
        ["<="] = (v, a) => Py.Compare(v, a[0], "<=") <= 0,
        ["gt"] = (v, a) => Py.Compare(v, a[0], ">") > 0,
        ["greaterthan"] = (v, a) => Py.Compare(v, a[0], ">") > 0,
        [">"] = (v, a) => Py.Compare(v, a[0], ">") > 0,
        ["ge"] = (v, a) => Py.Compare(v, a[0], ">=") >= 0,
        [">="] = (v, a) => Py.Compare(v, a[0], ">=") >= 0,
        ["in"] = (v, a) => Py.Contains(a[0], v),
        ["odd"] = (v, _) => v is long l && l % 2 != 0,
        ["even"] = (v, _) => v is long l && l % 2 == 0,
        ["divisibleby"] = (v, a) => Py.Binary("%", v, a[0]) is long r ? r == 0 : Py.ToDouble(Py.Binary("%", v, a[0])) == 0,
        ["lower"] = (v, _) => v is string s && s == s.ToLowerInvariant(),
        ["upper"] = (v, _) => v is string s && s == s.ToUpperInvariant(),
        ["escaped"] = (_, _) => false,
        ["filter"] = (v, _) => v is string s && HasFilter(s),
        ["test"] = (v, _) => v is string s && HasTest(s),
    };

    // ---- attribute access and methods ----

    /// <summary>Jinja2's <c>obj.name</c>: an attribute (method) first, then the item.</summary>
    public static object? GetAttr(object? obj, string name)
    {
        switch (obj)
        {
            case Undefined u: throw u.Fail();
            case Dictionary<string, object?> d:
                if (DictMethod(d, name) is { } m) return m;
                return d.TryGetValue(name, out var v) ? v : Undefined.Missing(obj, name);
            case string s: return (object?)StringMethod(s, name) ?? Undefined.Missing(obj, name);
            case IList<object?> l: return (object?)ListMethod(l, name) ?? Undefined.Missing(obj, name);
            case Namespace ns: return ns.Attributes.TryGetValue(name, out var nv) ? nv : Undefined.Missing(obj, name);
            case LoopInfo loop: return loop.Get(name);
            default: return Undefined.Missing(obj, name);
        }
    }

    /// <summary>Jinja2's <c>obj[key]</c>: the item first, then (for a string key) the attribute.</summary>
    public static object? GetItem(object? obj, object? key)
    {
        switch (obj)
        {
            case Undefined u: throw u.Fail();
            case Dictionary<string, object?> d when key is string k:
                return d.TryGetValue(k, out var v) ? v : GetAttr(obj, k);
            case IList<object?> l when key is long or bool:
            {
                long i = key is bool b ? (b ? 1 : 0) : (long)key;
                if (i < 0) i += l.Count;
                return i >= 0 && i < l.Count ? l[(int)i] : Undefined.Missing(obj, key);
            }
            case string s when key is long idx:
            {
                long i = idx < 0 ? idx + s.Length : idx;
                return i >= 0 && i < s.Length ? s[(int)i].ToString() : Undefined.Missing(obj, key);
            }
            default:
                return key is string name ? GetAttr(obj, name) : Undefined.Missing(obj, key);
        }
    }

    private static PyFunction Method(string name, Func<List<object?>, Dictionary<string, object?>?, object?> fn) => new(name, fn);

    private static PyFunction? DictMethod(Dictionary<string, object?> d, string name) => name switch
    {
        "items" => Method(name, (_, _) => d.Select(kv => (object?)new object?[] { kv.Key, kv.Value }).ToList()),
        "keys" => Method(name, (_, _) => d.Keys.Cast<object?>().ToList()),
        "values" => Method(name, (_, _) => d.Values.ToList()),
        "get" => Method(name, (a, k) => Arg(a, k, 0, "key") is string key && d.TryGetValue(key, out var v) ? v : Arg(a, k, 1, "default")),
        _ => null,
    };

    private static PyFunction? ListMethod(IList<object?> l, string name) => name switch
    {
        "index" => Method(name, (a, _) =>
        {
            for (int i = 0; i < l.Count; i++) if (Py.Equals(l[i], a[0])) return (long)i;
            throw new ChatTemplateException($"{Py.Repr(a[0])} is not in list");
        }),
        "count" => Method(name, (a, _) => (long)l.Count(x => Py.Equals(x, a[0]))),
        _ => null,
    };

    private static PyFunction? StringMethod(string s, string name) => name switch
    {
        "strip" => Method(name, (a, k) => Arg(a, k, 0, "chars") is string c ? s.Trim(c.ToCharArray()) : s.Trim()),
        "lstrip" => Method(name, (a, k) => Arg(a, k, 0, "chars") is string c ? s.TrimStart(c.ToCharArray()) : s.TrimStart()),
        "rstrip" => Method(name, (a, k) => Arg(a, k, 0, "chars") is string c ? s.TrimEnd(c.ToCharArray()) : s.TrimEnd()),
        "upper" => Method(name, (_, _) => s.ToUpperInvariant()),
        "lower" => Method(name, (_, _) => s.ToLowerInvariant()),
        "capitalize" => Method(name, (_, _) => Capitalize(s)),
        "title" => Method(name, (_, _) => PythonTitle(s)),
        "startswith" => Method(name, (a, _) => Affix(a[0]).Any(p => s.StartsWith(p, StringComparison.Ordinal))),
        "endswith" => Method(name, (a, _) => Affix(a[0]).Any(p => s.EndsWith(p, StringComparison.Ordinal))),
        "split" => Method(name, (a, k) => Split(s, Arg(a, k, 0, "sep"), (long)(Arg(a, k, 1, "maxsplit", -1L) ?? -1L))),
        "rsplit" => Method(name, (a, k) => RSplit(s, Arg(a, k, 0, "sep"), (long)(Arg(a, k, 1, "maxsplit", -1L) ?? -1L))),
        "splitlines" => Method(name, (_, _) => SplitLines(s).Cast<object?>().ToList()),
        "replace" => Method(name, (a, k) => ReplaceCount(s, RequireString(a[0], "replace"), RequireString(a[1], "replace"), a.Count > 2 ? (long)a[2]! : -1)),
        "find" => Method(name, (a, _) => (long)s.IndexOf(RequireString(a[0], "find"), StringComparison.Ordinal)),
        "rfind" => Method(name, (a, _) => (long)s.LastIndexOf(RequireString(a[0], "rfind"), StringComparison.Ordinal)),
        "index" => Method(name, (a, _) => s.IndexOf(RequireString(a[0], "index"), StringComparison.Ordinal) is var i and >= 0 ? (long)i : throw new ChatTemplateException("substring not found")),
        "count" => Method(name, (a, _) => CountOf(s, RequireString(a[0], "count"))),
        "join" => Method(name, (a, _) => JoinChecked(s, Py.Iterate(a[0]).Select(x => RequireString(x, "join")))),
        "isdigit" => Method(name, (_, _) => s.Length > 0 && s.All(char.IsDigit)),
        "isalpha" => Method(name, (_, _) => s.Length > 0 && s.All(char.IsLetter)),
        "isalnum" => Method(name, (_, _) => s.Length > 0 && s.All(char.IsLetterOrDigit)),
        "isspace" => Method(name, (_, _) => s.Length > 0 && s.All(char.IsWhiteSpace)),
        "islower" => Method(name, (_, _) => s.Any(char.IsLetter) && s == s.ToLowerInvariant()),
        "isupper" => Method(name, (_, _) => s.Any(char.IsLetter) && s == s.ToUpperInvariant()),
        _ => null,
    };

    private static IEnumerable<string> Affix(object? a) => a switch
    {
        string p => [p],
        object?[] t => t.Select(x => RequireString(x, "startswith/endswith")),
        _ => throw Py.TypeError($"startswith/endswith first arg must be str or a tuple of str, not {Py.TypeName(a)}"),
    };

    private static long CountOf(string s, string sub)
    {
        if (sub.Length == 0) return s.Length + 1;
        long n = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    private static string PythonTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            sb.Append(prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            prevCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    /// <summary>Python's str.split: no separator splits on whitespace runs and drops empty parts.</summary>
    private static List<object?> Split(string s, object? sep, long maxSplit)
    {
        var parts = new List<object?>();
        if (sep == null)
        {
            int i = 0;
            while (true)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (maxSplit >= 0 && parts.Count == maxSplit) { Grow(parts).Add(s[i..].TrimEnd()); break; }
                int start = i;
                while (i < s.Length && !char.IsWhiteSpace(s[i])) i++;
                Grow(parts).Add(s[start..i]);
            }
            return parts;
        }
        string sp = RequireString(sep, "split");
        if (sp.Length == 0) throw new ChatTemplateException("empty separator");
        int pos = 0;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int j = s.IndexOf(sp, pos, StringComparison.Ordinal);
            if (j < 0) break;
            Grow(parts).Add(s[pos..j]);
            pos = j + sp.Length;
        }
        Grow(parts).Add(s[pos..]);
        return parts;
    }

    private static List<object?> RSplit(string s, object? sep, long maxSplit)
    {
        if (maxSplit < 0 || sep == null) return Split(s, sep, maxSplit);
        string sp = RequireString(sep, "rsplit");
        var parts = new List<object?>();
        int end = s.Length;
        while (parts.Count < maxSplit)
        {
            int j = end - sp.Length < 0 ? -1 : s.LastIndexOf(sp, end - 1, end, StringComparison.Ordinal);
            if (j < 0 || j + sp.Length > end) break;
            parts.Insert(0, s[(j + sp.Length)..end]);
            end = j;
        }
        parts.Insert(0, s[..end]);
        return parts;
    }
}
