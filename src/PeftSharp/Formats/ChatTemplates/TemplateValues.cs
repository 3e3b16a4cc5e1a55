using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// Jinja2's default Undefined: prints as "", is falsy, iterates as empty, has length 0; any other use
/// (attribute or item access, arithmetic, calling) fails with Jinja2's message.
/// </summary>
internal sealed class Undefined
{
    private readonly string? _name;
    private readonly object? _owner;
    private readonly bool _hasOwner;
    private readonly object? _key;

    private Undefined(string? name, object? owner, bool hasOwner, object? key)
    {
        _name = name;
        _owner = owner;
        _hasOwner = hasOwner;
        _key = key;
    }

    public static Undefined Named(string name) => new(name, null, false, null);
    public static Undefined Missing(object? owner, object? key) => new(null, owner, true, key);
    public static readonly Undefined Plain = new(null, null, false, null);

    public string Message =>
        !_hasOwner ? (_name == null ? "undefined value" : $"'{_name}' is undefined")
        : _key is string s ? $"'{Py.ObjectTypeRepr(_owner)}' has no attribute '{s}'"
        : $"{Py.ObjectTypeRepr(_owner)} has no element {Py.Repr(_key)}";

    public ChatTemplateException Fail() => new(Message);
}

/// <summary>The object <c>namespace(...)</c> makes: the one thing <c>{% set ns.attr = ... %}</c> may change.</summary>
internal sealed class Namespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>A callable value: a global function or a bound method of a string, dict or list.</summary>
internal sealed class PyFunction(string name, Func<List<object?>, Dictionary<string, object?>?, object?> invoke)
{
    public string Name { get; } = name;
    public object? Invoke(List<object?> args, Dictionary<string, object?>? kwargs) => invoke(args, kwargs);
}

/// <summary>The <c>loop</c> variable inside a for loop.</summary>
internal sealed class LoopInfo(List<object?> items)
{
    public int Index0;
    public int Length => items.Count;

    public object? Get(string name) => name switch
    {
        "index" => (long)Index0 + 1,
        "index0" => (long)Index0,
        "revindex" => (long)(Length - Index0),
        "revindex0" => (long)(Length - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == Length - 1,
        "length" => (long)Length,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? items[Index0 - 1] : Undefined.Named("previtem"),
        "nextitem" => Index0 + 1 < Length ? items[Index0 + 1] : Undefined.Named("nextitem"),
        "cycle" => new PyFunction("cycle", (args, _) =>
            args.Count == 0 ? throw new ChatTemplateException("no items for cycling given") : args[Index0 % args.Count]),
        _ => Undefined.Missing(this, name),
    };
}

/// <summary>Python semantics over the template value model: null (None), bool, long, double, string,
/// List (list), object?[] (tuple), Dictionary&lt;string, object?&gt; (dict), Undefined, Namespace,
/// LoopInfo, PyFunction, Macro.</summary>
internal static class Py
{
    public static ChatTemplateException TypeError(string message) => new(message);

    /// <summary>Converts a .NET value (JsonElement, IDictionary, IEnumerable, numbers...) into the value model.</summary>
    public static object? FromNet(object? v) => v switch
    {
        null => null,
        string or bool or long or double or Undefined or Namespace or PyFunction => v,
        int i => (long)i,
        short s => (long)s,
        byte b => (long)b,
        uint u => (long)u,
        ulong ul => (long)ul,
        float f => (double)f,
        decimal m => (double)m,
        JsonElement e => FromJson(e),
        IDictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => FromNet(kv.Value), StringComparer.Ordinal),
        IDictionary d => d.Keys.Cast<object>().ToDictionary(k => Str(FromNet(k)), k => FromNet(d[k]), StringComparer.Ordinal),
        IEnumerable e => e.Cast<object?>().Select(FromNet).ToList(),
        _ => v.ToString(),
    };

    public static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.Number => e.TryGetInt64(out long l) ? (object)l : e.GetDouble(),
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        _ => e.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal), (d, p) => { d[p.Name] = FromJson(p.Value); return d; }),
    };

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        ICollection c => c.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        object?[] => "tuple",
        Dictionary<string, object?> => "dict",
        Undefined => "Undefined",
        Namespace => "Namespace",
        LoopInfo => "LoopContext",
        _ => "function",
    };

    public static string ObjectTypeRepr(object? v) => v == null ? "None" : TypeName(v) + " object";

    public static string Str(object? v) => v switch
    {
        null => "None",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatFloat(d),
        Undefined => "",
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        AppendRepr(sb, v, 0);
        return sb.ToString();
    }

    private static void AppendRepr(StringBuilder sb, object? v, int depth)
    {
        TemplateLimits.CheckValueDepth(depth);
        TemplateLimits.CheckString(sb.Length, "repr");
        switch (v)
        {
            case string s: AppendStringRepr(sb, s); break;
            case List<object?> list:
                sb.Append('[');
                for (int i = 0; i < list.Count; i++) { if (i > 0) sb.Append(", "); AppendRepr(sb, list[i], depth + 1); }
                sb.Append(']');
                break;
            case object?[] tuple:
                sb.Append('(');
                for (int i = 0; i < tuple.Length; i++) { if (i > 0) sb.Append(", "); AppendRepr(sb, tuple[i], depth + 1); }
                sb.Append(tuple.Length == 1 ? ",)" : ")");
                break;
            case Dictionary<string, object?> dict:
                sb.Append('{');
                bool first = true;
                foreach (var (k, val) in dict)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    AppendStringRepr(sb, k);
                    sb.Append(": ");
                    AppendRepr(sb, val, depth + 1);
                }
                sb.Append('}');
                break;
            case Undefined: sb.Append("Undefined"); break;
            case Namespace ns: sb.Append("<Namespace "); AppendRepr(sb, ns.Attributes, depth + 1); sb.Append('>'); break;
            case PyFunction f: sb.Append("<function ").Append(f.Name).Append('>'); break;
            case LoopInfo: sb.Append("<LoopContext>"); break;
            case null or bool or long or double: sb.Append(Str(v)); break;
            default: sb.Append(v.ToString()); break;
        }
    }

    /// <summary>Python's repr of a str: single quotes unless the text has ' and no ".</summary>
    private static void AppendStringRepr(StringBuilder sb, string s)
    {
        char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(q);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c == q || c == '\\') sb.Append('\\').Append(c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                int cp = char.ConvertToUtf32(c, s[i + 1]);
                if (IsPrintable(CharUnicodeInfo.GetUnicodeCategory(cp))) sb.Append(c).Append(s[i + 1]);
                else sb.Append("\\U").Append(cp.ToString("x8", CultureInfo.InvariantCulture));
                i++;
            }
            else if (c == ' ' || IsPrintable(CharUnicodeInfo.GetUnicodeCategory(c))) sb.Append(c);
            else if (c < 0x100) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
        }
        sb.Append(q);
    }

    private static bool IsPrintable(UnicodeCategory cat) => cat is not (UnicodeCategory.Control or UnicodeCategory.Format
        or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned
        or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator or UnicodeCategory.SpaceSeparator);

    /// <summary>Python's repr(float): shortest round-trip digits, fixed notation for exponents -4..15, else d.ddde+XX.</summary>
    public static string FormatFloat(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        string shortest = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);
        // Digits and decimal exponent from the shortest round-trip form.
        int ePos = shortest.IndexOfAny(['E', 'e']);
        string mantissa = ePos >= 0 ? shortest[..ePos] : shortest;
        int exp = ePos >= 0 ? int.Parse(shortest[(ePos + 1)..], CultureInfo.InvariantCulture) : 0;
        int dot = mantissa.IndexOf('.');
        string digits = dot >= 0 ? mantissa.Remove(dot, 1) : mantissa;
        int pointPos = (dot >= 0 ? dot : mantissa.Length) + exp;
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') { lead++; pointPos--; }
        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int sciExp = pointPos - 1;
        var sb = new StringBuilder();
        if (d < 0) sb.Append('-');
        if (sciExp >= -4 && sciExp < 16)
        {
            if (pointPos <= 0) sb.Append("0.").Append('0', -pointPos).Append(digits);
            else if (pointPos >= digits.Length) sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
            else sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(sciExp < 0 ? '-' : '+').Append(Math.Abs(sciExp).ToString("00", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw TypeError($"expected a number, got '{TypeName(v)}'"),
    };

    private static object? Int(object? v) => v is bool b ? (b ? 1L : 0L) : v;

    public static new bool Equals(object? a, object? b) => Equals(a, b, 0);

    private static bool Equals(object? a, object? b, int depth)
    {
        TemplateLimits.CheckValueDepth(depth);
        RenderBudget.Tick();
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (IsNumber(a) && IsNumber(b))
            return Int(a) is long x && Int(b) is long y ? x == y : ToDouble(a) == ToDouble(b);
        switch (a)
        {
            case null: return b == null;
            case string s: return b is string t && s == t;
            case List<object?> l: return b is List<object?> m && SequenceEquals(l, m, depth);
            case object?[] tu: return b is object?[] tv && SequenceEquals(tu, tv, depth);
            case Dictionary<string, object?> d:
                return b is Dictionary<string, object?> e && d.Count == e.Count
                    && d.All(kv => e.TryGetValue(kv.Key, out var o) && Equals(kv.Value, o, depth + 1));
            default: return ReferenceEquals(a, b);
        }
    }

    private static bool SequenceEquals(IList<object?> a, IList<object?> b, int depth)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++) if (!Equals(a[i], b[i], depth + 1)) return false;
        return true;
    }

    public static int Compare(object? a, object? b, string op) => Compare(a, b, op, 0);

    private static int Compare(object? a, object? b, string op, int depth)
    {
        TemplateLimits.CheckValueDepth(depth);
        RenderBudget.Tick();
        if (a is Undefined u) throw u.Fail();
        if (b is Undefined w) throw w.Fail();
        if (IsNumber(a) && IsNumber(b))
            return Int(a) is long x && Int(b) is long y ? x.CompareTo(y) : ToDouble(a).CompareTo(ToDouble(b));
        if (a is string s && b is string t) return Math.Sign(string.CompareOrdinal(s, t));
        if (a is IList<object?> l && b is IList<object?> m && a.GetType() == b.GetType())
        {
            for (int i = 0; i < Math.Min(l.Count, m.Count); i++)
                if (!Equals(l[i], m[i], depth + 1)) return Compare(l[i], m[i], op, depth + 1);
            return l.Count.CompareTo(m.Count);
        }
        throw TypeError($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    public static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string t ? s.Contains(t, StringComparison.Ordinal)
            : throw TypeError($"'in <string>' requires string as left operand, not {TypeName(item)}"),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        IList<object?> l => l.Any(x => Equals(x, item)),
        Undefined => false,
        _ => throw TypeError($"argument of type '{TypeName(container)}' is not iterable"),
    };

    /// <summary>Iterates like Python's iter(): strings by character, dicts by key, Undefined as empty.</summary>
    public static IEnumerable<object?> Iterate(object? v) => v switch
    {
        IList<object?> l => l,
        string s => s.Select(c => (object?)c.ToString()),
        Dictionary<string, object?> d => d.Keys,
        Undefined => [],
        _ => throw TypeError($"'{TypeName(v)}' object is not iterable"),
    };

    public static List<object?> ToList(object? v)
    {
        if (v is string s) TemplateLimits.CheckList(s.Length, "a string's characters as a list");
        return Iterate(v).ToList();
    }

    public static long Length(object? v) => v switch
    {
        string s => s.Length,
        ICollection c => c.Count,
        Undefined => 0,
        _ => throw TypeError($"object of type '{TypeName(v)}' has no len()"),
    };

    public static object? Binary(string op, object? a, object? b)
    {
        if (a is Undefined u) throw u.Fail();
        if (b is Undefined w) throw w.Fail();
        switch (op)
        {
            case "+":
                if (a is string s1 && b is string s2) { TemplateLimits.CheckString((long)s1.Length + s2.Length, "'+'"); return s1 + s2; }
                if (a is List<object?> l1 && b is List<object?> l2) { TemplateLimits.CheckList((long)l1.Count + l2.Count, "'+'"); return l1.Concat(l2).ToList(); }
                if (a is object?[] t1 && b is object?[] t2) { TemplateLimits.CheckList((long)t1.Length + t2.Length, "'+'"); return t1.Concat(t2).ToArray(); }
                if (a is string) throw TypeError($"can only concatenate str (not \"{TypeName(b)}\") to str");
                if (a is List<object?>) throw TypeError($"can only concatenate list (not \"{TypeName(b)}\") to list");
                return Arith(op, a, b, (x, y) => checked(x + y), (x, y) => x + y);
            case "-": return Arith(op, a, b, (x, y) => checked(x - y), (x, y) => x - y);
            case "*":
                if (a is string rs && Int(b) is long n) return Repeat(rs, n);
                if (Int(a) is long n2 && b is string rs2) return Repeat(rs2, n2);
                if (a is List<object?> rl && Int(b) is long n3) return RepeatList(rl, n3);
                if (Int(a) is long n4 && b is List<object?> rl2) return RepeatList(rl2, n4);
                return Arith(op, a, b, (x, y) => checked(x * y), (x, y) => x * y);
            case "/":
                CheckNumbers(op, a, b);
                if (ToDouble(b) == 0) throw new ChatTemplateException("division by zero");
                return ToDouble(a) / ToDouble(b);
            case "//":
                CheckNumbers(op, a, b);
                if (ToDouble(b) == 0) throw new ChatTemplateException("integer division or modulo by zero");
                if (Int(a) is long fa && Int(b) is long fb) return FloorDiv(fa, fb);
                return Math.Floor(ToDouble(a) / ToDouble(b));
            case "%":
                if (a is string) throw TypeError("printf-style string formatting ('%' on a string) is not supported");
                CheckNumbers(op, a, b);
                if (ToDouble(b) == 0) throw new ChatTemplateException("integer division or modulo by zero");
                if (Int(a) is long ma && Int(b) is long mb) return ma - mb * FloorDiv(ma, mb);
                double da = ToDouble(a), db = ToDouble(b);
                return da - db * Math.Floor(da / db);
            case "**":
                CheckNumbers(op, a, b);
                if (Int(a) is long pa && Int(b) is long pb && pb >= 0) return IntPow(pa, pb);
                return Math.Pow(ToDouble(a), ToDouble(b));
            default: throw TypeError($"unknown operator {op}");
        }
    }

    private static string Repeat(string s, long n)
    {
        if (n <= 0 || s.Length == 0) return "";
        TemplateLimits.CheckString(n > TemplateLimits.MaxStringLength ? n : s.Length * n, "string repetition");
        return new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();
    }

    private static List<object?> RepeatList(List<object?> list, long n)
    {
        if (n <= 0 || list.Count == 0) return [];
        TemplateLimits.CheckList(n > TemplateLimits.MaxListLength ? n : list.Count * n, "list repetition");
        var result = new List<object?>(list.Count * (int)n);
        for (long i = 0; i < n; i++) result.AddRange(list);
        return result;
    }

    /// <summary>Integer power by squaring. Python's ints are unbounded; here they are 64-bit, and a result beyond that is an error, not a wrapped value.</summary>
    private static long IntPow(long x, long exponent)
    {
        long result = 1;
        try
        {
            while (exponent > 0)
            {
                if ((exponent & 1) != 0) result = checked(result * x);
                exponent >>= 1;
                if (exponent > 0) x = checked(x * x);
            }
        }
        catch (OverflowException) { throw IntegerTooLarge("'**'"); }
        return result;
    }

    private static ChatTemplateException IntegerTooLarge(string op) =>
        TemplateLimits.Exceeded($"integer size ({op} gives a result beyond 64 bits)", "-2**63 .. 2**63-1");

    private static long FloorDiv(long a, long b)
    {
        long q = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
    }

    private static void CheckNumbers(string op, object? a, object? b)
    {
        if (!IsNumber(a) || !IsNumber(b))
            throw TypeError($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static object Arith(string op, object? a, object? b, Func<long, long, long> onInt, Func<double, double, double> onFloat)
    {
        CheckNumbers(op, a, b);
        if (Int(a) is long x && Int(b) is long y)
        {
            try { return onInt(x, y); }
            catch (OverflowException) { throw IntegerTooLarge($"'{op}'"); }
        }
        return onFloat(ToDouble(a), ToDouble(b));
    }

    private static string SliceString(string text, object? start, object? stop, long st)
    {
        int n = text.Length;
        long Clamp(object? x, long dflt, long lo, long hi)
        {
            if (x is null) return dflt;
            long i = Int(x) is long k ? k : throw TypeError("slice indices must be integers or None");
            if (i < 0) i += n;
            return Math.Clamp(i, lo, hi);
        }
        var sb = new StringBuilder();
        if (st > 0)
            for (long i = Clamp(start, 0, 0, n), end = Clamp(stop, n, 0, n); i < end; i += st) sb.Append(text[(int)i]);
        else
            for (long i = Clamp(start, n - 1, -1, n - 1), end = Clamp(stop, -1, -1, n - 1); i > end; i += st) sb.Append(text[(int)i]);
        return sb.ToString();
    }

    public static object? Negate(object? v) => v switch
    {
        long l => l == long.MinValue ? throw IntegerTooLarge("unary '-'") : (object)(-l),
        double d => -d,
        bool b => b ? -1L : 0L,
        Undefined u => throw u.Fail(),
        _ => throw TypeError($"bad operand type for unary -: '{TypeName(v)}'"),
    };

    public static object? Slice(object? v, object? start, object? stop, object? step)
    {
        if (v is Undefined u) throw u.Fail();
        long st = step is null ? 1 : Int(step) is long s ? s : throw TypeError("slice indices must be integers or None");
        if (st == 0) throw new ChatTemplateException("slice step cannot be zero");
        if (v is string text) return SliceString(text, start, stop, st);
        IList<object?> items = v switch
        {
            IList<object?> l => l,
            _ => throw TypeError($"'{TypeName(v)}' object is not subscriptable"),
        };
        int n = items.Count;
        long Clamp(object? x, long dflt, long lo, long hi)
        {
            if (x is null) return dflt;
            long i = Int(x) is long k ? k : throw TypeError("slice indices must be integers or None");
            if (i < 0) i += n;
            return Math.Clamp(i, lo, hi);
        }
        var picked = new List<object?>();
        if (st > 0)
            for (long i = Clamp(start, 0, 0, n), end = Clamp(stop, n, 0, n); i < end; i += st) picked.Add(items[(int)i]);
        else
            for (long i = Clamp(start, n - 1, -1, n - 1), end = Clamp(stop, -1, -1, n - 1); i > end; i += st) picked.Add(items[(int)i]);
        return v switch
        {
            object?[] => picked.ToArray(),
            _ => picked,
        };
    }
}
