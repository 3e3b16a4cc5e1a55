using System.Globalization;
using System.Text;

namespace PeftSharp.Formats.ChatTemplates;

/// <summary>A <c>{% macro %}</c>: rendered into its own buffer, it returns the text.</summary>
internal sealed class Macro(MacroNode node, Scope closure)
{
    public MacroNode Node { get; } = node;
    public Scope Closure { get; } = closure;
}

/// <summary>A variable frame. <c>for</c> loops and macros open one; <c>if</c> does not (as in Jinja2).</summary>
internal sealed class Scope(Scope? parent)
{
    public Scope? Parent { get; } = parent;
    public Dictionary<string, object?> Vars { get; } = new(StringComparer.Ordinal);

    public bool TryGet(string name, out object? value)
    {
        for (var s = this; s != null; s = s.Parent)
            if (s.Vars.TryGetValue(name, out value)) return true;
        value = null;
        return false;
    }
}

/// <summary>Walks the template tree and writes the output, with Python/Jinja2 value semantics.</summary>
internal sealed class TemplateInterpreter
{
    private enum Flow { Normal, Break, Continue }

    private StringBuilder _out = new();
    private readonly StringBuilder _root;
    private readonly List<(int Start, int End)> _generationSpans = [];
    private readonly DateTime _now;
    private readonly RenderBudget _budget = new();

    private TemplateInterpreter(DateTime now)
    {
        _root = _out;
        _now = now;
    }

    public static (string Text, List<(int Start, int End)> GenerationSpans) Render(List<Node> template, Dictionary<string, object?> variables, DateTime now)
    {
        var interpreter = new TemplateInterpreter(now);
        var globals = new Scope(null);
        interpreter.AddGlobals(globals.Vars);
        var scope = new Scope(globals);
        foreach (var (k, v) in variables) scope.Vars[k] = Py.FromNet(v);
        using var budget = interpreter._budget.Enter();
        try { interpreter.ExecBody(template, scope); }
        catch (OutOfMemoryException) { throw TemplateLimits.Exceeded("memory", "the process ran out of memory while rendering"); }
        return (interpreter._root.ToString(), interpreter._generationSpans);
    }

    private void AddGlobals(Dictionary<string, object?> g)
    {
        g["raise_exception"] = new PyFunction("raise_exception", (a, _) =>
            throw new ChatTemplateException(a.Count > 0 ? Py.Str(a[0]) : "raise_exception called") { FromTemplate = true });
        g["range"] = new PyFunction("range", (a, _) =>
        {
            long start = 0, stop, step = 1;
            if (a.Count == 1) stop = (long)a[0]!;
            else { start = (long)a[0]!; stop = (long)a[1]!; if (a.Count > 2) step = (long)a[2]!; }
            if (step == 0) throw new ChatTemplateException("range() arg 3 must not be zero");
            var list = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step)
            {
                list.Add(i);
                if (list.Count > 100_000) throw new ChatTemplateException("range too big, maximum size for range is 100000");
            }
            return list;
        });
        g["namespace"] = new PyFunction("namespace", (a, k) =>
        {
            var ns = new Namespace();
            if (a.Count > 0 && a[0] is Dictionary<string, object?> init) foreach (var (key, v) in init) ns.Attributes[key] = v;
            if (k != null) foreach (var (key, v) in k) ns.Attributes[key] = v;
            return ns;
        });
        g["dict"] = new PyFunction("dict", (a, k) =>
        {
            var d = new Dictionary<string, object?>(StringComparer.Ordinal);
            if (a.Count > 0 && a[0] is Dictionary<string, object?> init) foreach (var (key, v) in init) d[key] = v;
            if (k != null) foreach (var (key, v) in k) d[key] = v;
            return d;
        });
        g["strftime_now"] = new PyFunction("strftime_now", (a, _) => Strftime(_now, Py.Str(a.Count > 0 ? a[0] : "")));
    }

    private static ChatTemplateException AtLine(ChatTemplateException e, int line) =>
        e.FromTemplate || e.Line != null ? e : new ChatTemplateException($"Chat template error at line {line}: {e.Message}", line);

    private Flow ExecBody(List<Node> body, Scope scope)
    {
        TemplateLimits.EnsureStack();
        foreach (var node in body)
        {
            Flow flow;
            try { flow = Exec(node, scope); }
            catch (ChatTemplateException e) { throw AtLine(e, node.Line); }
            // A comparer that throws inside a sort (`[1, 'a'] | sort`) arrives wrapped by the sort.
            catch (InvalidOperationException e) when (e.InnerException is ChatTemplateException inner) { throw AtLine(inner, node.Line); }
            catch (Exception e) when (e is InvalidCastException or NullReferenceException or ArgumentException or IndexOutOfRangeException
                                          or OverflowException or InvalidOperationException or FormatException)
            {
                throw new ChatTemplateException($"Chat template error at line {node.Line}: {e.Message}", node.Line);
            }
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private Flow Exec(Node node, Scope scope)
    {
        switch (node)
        {
            case TextNode t: Write(t.Text); return Flow.Normal;
            case OutputNode o: Write(Py.Str(Eval(o.Value, scope))); return Flow.Normal;
            case IfNode n:
                foreach (var (cond, body) in n.Branches)
                    if (Py.Truthy(Eval(cond, scope))) return ExecBody(body, scope);
                return n.Else != null ? ExecBody(n.Else, scope) : Flow.Normal;
            case ForNode f: ExecFor(f, scope); return Flow.Normal;
            case SetNode s: Assign(s.Target, Eval(s.Value, scope), scope); return Flow.Normal;
            case SetBlockNode sb:
            {
                object? value = Capture(sb.Body, scope);
                foreach (var filter in sb.Filters) value = ApplyFilter(filter, value, scope);
                Assign(sb.Target, value, scope);
                return Flow.Normal;
            }
            case MacroNode m: scope.Vars[m.Name] = new Macro(m, scope); return Flow.Normal;
            case FilterBlockNode fb:
            {
                object? value = Capture(fb.Body, scope);
                foreach (var filter in fb.Filters) value = ApplyFilter(filter, value, scope);
                Write(Py.Str(value));
                return Flow.Normal;
            }
            case GenerationNode g:
            {
                int start = _out.Length;
                var flow = ExecBody(g.Body, scope);
                if (ReferenceEquals(_out, _root)) _generationSpans.Add((start, _out.Length));
                return flow;
            }
            case BreakNode: return Flow.Break;
            case ContinueNode: return Flow.Continue;
            default: throw new ChatTemplateException($"unsupported statement {node.GetType().Name}");
        }
    }

    private void Write(string text)
    {
        TemplateLimits.CheckString((long)_out.Length + text.Length, "the output");
        _out.Append(text);
    }

    private string Capture(List<Node> body, Scope scope)
    {
        var saved = _out;
        _out = new StringBuilder();
        try
        {
            ExecBody(body, scope);
            return _out.ToString();
        }
        finally { _out = saved; }
    }

    private void ExecFor(ForNode f, Scope scope)
    {
        var source = Eval(f.Iterable, scope);
        var items = Py.ToList(source);
        var loopScope = new Scope(scope);
        if (f.Filter != null)
        {
            var kept = new List<object?>();
            foreach (var item in items)
            {
                _budget.Iteration();
                AssignTo(f.Target, item, loopScope);
                if (Py.Truthy(Eval(f.Filter, loopScope))) kept.Add(item);
            }
            items = kept;
        }
        if (items.Count == 0)
        {
            if (f.Else != null) ExecBody(f.Else, scope);
            return;
        }
        var loop = new LoopInfo(items);
        loopScope.Vars["loop"] = loop;
        for (int i = 0; i < items.Count; i++)
        {
            _budget.Iteration();
            loop.Index0 = i;
            AssignTo(f.Target, items[i], loopScope);
            if (ExecBody(f.Body, loopScope) == Flow.Break) break;
        }
    }

    private void Assign(Target target, object? value, Scope scope)
    {
        if (target is AttrTarget at)
        {
            if (!scope.TryGet(at.Object, out var obj) || obj is not Namespace ns)
                throw new ChatTemplateException($"can only assign attributes of a namespace() object, and '{at.Object}' is not one");
            ns.Attributes[at.Attribute] = value;
            return;
        }
        AssignTo(target, value, scope);
    }

    private static void AssignTo(Target target, object? value, Scope scope)
    {
        switch (target)
        {
            case NameTarget n: scope.Vars[n.Name] = value; break;
            case TupleTarget t:
                var items = Py.ToList(value);
                if (items.Count != t.Names.Count)
                    throw new ChatTemplateException($"cannot unpack {items.Count} values into {t.Names.Count} names");
                for (int i = 0; i < items.Count; i++) scope.Vars[t.Names[i]] = items[i];
                break;
            default: throw new ChatTemplateException("can only assign attributes of a namespace() object");
        }
    }

    // ---- expressions ----

    private object? Eval(Expr expr, Scope scope)
    {
        TemplateLimits.EnsureStack();
        switch (expr)
        {
            case ConstExpr c: return c.Value;
            case NameExpr n: return scope.TryGet(n.Name, out var v) ? v : Undefined.Named(n.Name);
            case GetAttrExpr ga: return TemplateBuiltins.GetAttr(Eval(ga.Object, scope), ga.Name);
            case GetItemExpr gi: return TemplateBuiltins.GetItem(Eval(gi.Object, scope), Eval(gi.Key, scope));
            case SliceExpr sl:
                return Py.Slice(Eval(sl.Object, scope), EvalOpt(sl.Start, scope), EvalOpt(sl.Stop, scope), EvalOpt(sl.Step, scope));
            case ListExpr l: return l.Items.Select(x => Eval(x, scope)).ToList();
            case TupleExpr t: return t.Items.Select(x => Eval(x, scope)).ToArray();
            case DictExpr d:
            {
                var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (k, val) in d.Items)
                {
                    var key = Eval(k, scope);
                    dict[key as string ?? throw new ChatTemplateException($"dict keys must be strings here, got {Py.TypeName(key)}")] = Eval(val, scope);
                }
                return dict;
            }
            case BinaryExpr b: return Py.Binary(b.Op, Eval(b.Left, scope), Eval(b.Right, scope));
            case UnaryExpr u:
            {
                var val = Eval(u.Operand, scope);
                if (u.Op == "-") return Py.Negate(val);
                return val is Undefined un ? throw un.Fail() : Py.IsNumber(val) ? (val is bool b ? (b ? 1L : 0L) : val) : throw Py.TypeError($"bad operand type for unary +: '{Py.TypeName(val)}'");
            }
            case AndExpr a:
            {
                var left = Eval(a.Left, scope);
                return Py.Truthy(left) ? Eval(a.Right, scope) : left;
            }
            case OrExpr o:
            {
                var left = Eval(o.Left, scope);
                return Py.Truthy(left) ? left : Eval(o.Right, scope);
            }
            case NotExpr n: return !Py.Truthy(Eval(n.Operand, scope));
            case CompareExpr c:
            {
                var left = Eval(c.First, scope);
                foreach (var (op, rightExpr) in c.Rest)
                {
                    var right = Eval(rightExpr, scope);
                    bool ok = op switch
                    {
                        "==" => Py.Equals(left, right),
                        "!=" => !Py.Equals(left, right),
                        "<" => Py.Compare(left, right, op) < 0,
                        "<=" => Py.Compare(left, right, op) <= 0,
                        ">" => Py.Compare(left, right, op) > 0,
                        ">=" => Py.Compare(left, right, op) >= 0,
                        "in" => Py.Contains(right, left),
                        _ => !Py.Contains(right, left),
                    };
                    if (!ok) return false;
                    left = right;
                }
                return true;
            }
            case ConcatExpr cc:
            {
                var sb = new StringBuilder();
                foreach (var part in cc.Parts) sb.Append(Py.Str(Eval(part, scope)));
                return sb.ToString();
            }
            case CondExpr ce:
                return Py.Truthy(Eval(ce.Condition, scope)) ? Eval(ce.Then, scope)
                    : ce.Else != null ? Eval(ce.Else, scope) : Undefined.Plain;
            case FilterExpr f: return ApplyFilter(f, f.Value == null ? null : Eval(f.Value, scope), scope);
            case TestExpr t:
            {
                var args = t.Args.Select(x => Eval(x, scope)).ToList();
                var value = Eval(t.Value, scope);
                bool result = TemplateBuiltins.ApplyTest(t.Name, value, args);
                return t.Negated ? !result : result;
            }
            case CallExpr call: return Call(call, scope);
            default: throw new ChatTemplateException($"unsupported expression {expr.GetType().Name}");
        }
    }

    private object? EvalOpt(Expr? e, Scope scope) => e == null ? null : Eval(e, scope);

    private object? ApplyFilter(FilterExpr f, object? value, Scope scope)
    {
        var args = f.Args.Select(x => Eval(x, scope)).ToList();
        Dictionary<string, object?>? kwargs = null;
        if (f.Kwargs.Count > 0)
        {
            kwargs = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (k, e) in f.Kwargs) kwargs[k] = Eval(e, scope);
        }
        return TemplateBuiltins.ApplyFilter(f.Name, value, args, kwargs);
    }

    private object? Call(CallExpr call, Scope scope)
    {
        var function = Eval(call.Function, scope);
        var args = call.Args.Select(x => Eval(x, scope)).ToList();
        Dictionary<string, object?>? kwargs = null;
        if (call.Kwargs.Count > 0)
        {
            kwargs = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (k, e) in call.Kwargs) kwargs[k] = Eval(e, scope);
        }
        return function switch
        {
            PyFunction pf => pf.Invoke(args, kwargs),
            Macro m => CallMacro(m, args, kwargs),
            Undefined u => throw u.Fail(),
            _ => throw Py.TypeError($"'{Py.TypeName(function)}' object is not callable"),
        };
    }

    private string CallMacro(Macro macro, List<object?> args, Dictionary<string, object?>? kwargs)
    {
        var node = macro.Node;
        if (args.Count > node.Parameters.Count)
            throw new ChatTemplateException($"macro '{node.Name}' takes not more than {node.Parameters.Count} argument(s)");
        var frame = new Scope(macro.Closure);
        for (int i = 0; i < node.Parameters.Count; i++)
        {
            var (name, dflt) = node.Parameters[i];
            if (i < args.Count) frame.Vars[name] = args[i];
            else if (kwargs != null && kwargs.Remove(name, out var kv)) frame.Vars[name] = kv;
            else frame.Vars[name] = dflt != null ? Eval(dflt, frame) : Undefined.Named(name);
        }
        if (kwargs is { Count: > 0 })
            throw new ChatTemplateException($"macro '{node.Name}' takes no keyword argument '{kwargs.Keys.First()}'");
        if (_budget.CallDepth >= TemplateLimits.MaxCallDepth)
            throw TemplateLimits.Exceeded($"macro call depth (macro '{node.Name}')", $"{TemplateLimits.MaxCallDepth} nested calls");
        _budget.CheckTime();
        _budget.CallDepth++;
        try { return Capture(node.Body, frame); }
        finally { _budget.CallDepth--; }
    }

    private static readonly string[] MonthNames = CultureInfo.InvariantCulture.DateTimeFormat.MonthNames;
    private static readonly string[] DayNames = CultureInfo.InvariantCulture.DateTimeFormat.DayNames;

    /// <summary>Python's strftime for the directives templates use (%d %m %Y %y %B %b %A %a %H %M %S %I %p %j %%).</summary>
    private static string Strftime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length) { sb.Append(format[i]); continue; }
            char c = format[++i];
            var inv = CultureInfo.InvariantCulture;
            sb.Append(c switch
            {
                'd' => t.Day.ToString("00", inv),
                'm' => t.Month.ToString("00", inv),
                'Y' => t.Year.ToString("0000", inv),
                'y' => (t.Year % 100).ToString("00", inv),
                'B' => MonthNames[t.Month - 1],
                'b' => MonthNames[t.Month - 1][..3],
                'A' => DayNames[(int)t.DayOfWeek],
                'a' => DayNames[(int)t.DayOfWeek][..3],
                'H' => t.Hour.ToString("00", inv),
                'I' => ((t.Hour + 11) % 12 + 1).ToString("00", inv),
                'M' => t.Minute.ToString("00", inv),
                'S' => t.Second.ToString("00", inv),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => t.DayOfYear.ToString("000", inv),
                '%' => "%",
                _ => "%" + c,
            });
        }
        return sb.ToString();
    }
}
