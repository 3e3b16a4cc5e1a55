namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// Recursive-descent parser for the Jinja2 subset chat templates use, with Jinja2's operator
/// precedence: conditional &lt; or &lt; and &lt; not &lt; comparisons/in &lt; + - &lt; ~ &lt; * / // % &lt; ** &lt;
/// unary -/+ &lt; postfix (. [] ()) and filters/tests. Unknown filters and tests are rejected here,
/// naming the line, as Jinja2 rejects them when it compiles a template.
/// </summary>
internal sealed class TemplateParser
{
    private readonly List<Token> _t;
    private int _i;
    private int _loopDepth;
    private int _nesting;
    private readonly Stack<(string Tag, int Line)> _open = new();

    private TemplateParser(List<Token> tokens) => _t = tokens;

    public static List<Node> Parse(string source)
    {
        var parser = new TemplateParser(TemplateLexer.Tokenize(source));
        var body = parser.ParseBody([], out _);
        return body;
    }

    private Token Cur => _t[_i];
    private Token Peek(int k = 1) => _t[Math.Min(_i + k, _t.Count - 1)];
    private Token Next() => _t[_i++];

    private static ChatTemplateException Error(int line, string message) => new($"Chat template syntax error at line {line}: {message}", line);

    private ChatTemplateException Unexpected(string expected) =>
        Error(Cur.Line, $"expected {expected}, found {Cur.Describe()}");

    private void ExpectOp(string op)
    {
        if (!Cur.IsOp(op)) throw Unexpected($"'{op}'");
        _i++;
    }

    private string ExpectName(string what)
    {
        if (Cur.Kind != TokenKind.Name) throw Unexpected(what);
        return Next().Value;
    }

    private void ExpectBlockEnd()
    {
        if (Cur.Kind != TokenKind.BlockEnd) throw Unexpected("end of statement block '%}'");
        _i++;
    }

    private List<Node> ParseBody(string[] endTags, out string endTag)
    {
        var nodes = new List<Node>();
        while (true)
        {
            var tok = Cur;
            switch (tok.Kind)
            {
                case TokenKind.Text:
                    nodes.Add(new TextNode(tok.Line, tok.Value));
                    _i++;
                    break;
                case TokenKind.VarBegin:
                    _i++;
                    var value = ParseTuple();
                    if (Cur.Kind != TokenKind.VarEnd) throw Unexpected("end of print statement '}}'");
                    _i++;
                    nodes.Add(new OutputNode(tok.Line, value));
                    break;
                case TokenKind.BlockBegin:
                    var name = Peek();
                    if (name.Kind == TokenKind.Name && Array.IndexOf(endTags, name.Value) >= 0)
                    {
                        _i += 2;
                        endTag = name.Value;
                        return nodes;
                    }
                    _i++;
                    nodes.Add(ParseStatement(endTags));
                    break;
                case TokenKind.Eof:
                    if (endTags.Length > 0)
                    {
                        var (openTag, openLine) = _open.Peek();
                        throw Error(tok.Line, $"unexpected end of template, expected {Quoted(endTags)} to close the '{openTag}' opened at line {openLine}");
                    }
                    endTag = "";
                    return nodes;
                default:
                    throw Error(tok.Line, $"unexpected {tok.Describe()}");
            }
        }
    }

    private static string Quoted(string[] tags) => string.Join(" or ", tags.Select(t => $"'{t}'"));

    private List<Node> ParseBlockBody(string tag, int line, string[] endTags, out string endTag)
    {
        Enter(line);
        _open.Push((tag, line));
        var body = ParseBody(endTags, out endTag);
        _open.Pop();
        _nesting--;
        return body;
    }

    /// <summary>One level deeper in the source; past <see cref="TemplateLimits.MaxNesting"/> the template is refused (a deep recursion would overflow the stack).</summary>
    private void Enter(int line)
    {
        if (++_nesting > TemplateLimits.MaxNesting)
            throw Error(line, $"nesting deeper than the limit of {TemplateLimits.MaxNesting} levels (parentheses, brackets, operators or blocks); a real chat template needs far less");
        TemplateLimits.EnsureStack();
    }

    private Node ParseStatement(string[] enclosingEnds)
    {
        var tok = Cur;
        if (tok.Kind != TokenKind.Name) throw Unexpected("a tag name");
        _i++;
        switch (tok.Value)
        {
            case "if": return ParseIf(tok.Line);
            case "for": return ParseFor(tok.Line);
            case "set": return ParseSet(tok.Line);
            case "macro": return ParseMacro(tok.Line);
            case "filter":
            {
                var filters = ParseFilterChain(null);
                ExpectBlockEnd();
                var body = ParseBlockBody("filter", tok.Line, ["endfilter"], out _);
                ExpectBlockEnd();
                return new FilterBlockNode(tok.Line, filters, body);
            }
            case "generation":
            {
                ExpectBlockEnd();
                var body = ParseBlockBody("generation", tok.Line, ["endgeneration"], out _);
                ExpectBlockEnd();
                return new GenerationNode(tok.Line, body);
            }
            case "break" or "continue" when _loopDepth > 0:
                ExpectBlockEnd();
                return tok.Value == "break" ? new BreakNode(tok.Line) : new ContinueNode(tok.Line);
            default:
                string hint = enclosingEnds.Length > 0 ? $"; expected {Quoted(enclosingEnds)} to close the '{_open.Peek().Tag}' opened at line {_open.Peek().Line}" : "";
                throw Error(tok.Line, $"unknown tag '{tok.Value}'{hint}");
        }
    }

    private Node ParseIf(int line)
    {
        var branches = new List<(Expr, List<Node>)>();
        List<Node>? elseBody = null;
        var cond = ParseTuple();
        while (true)
        {
            ExpectBlockEnd();
            var body = ParseBlockBody("if", line, ["elif", "else", "endif"], out var end);
            branches.Add((cond, body));
            if (end == "elif") { cond = ParseTuple(); continue; }
            if (end == "else")
            {
                ExpectBlockEnd();
                elseBody = ParseBlockBody("if", line, ["endif"], out _);
            }
            ExpectBlockEnd();
            return new IfNode(line, branches, elseBody);
        }
    }

    private Node ParseFor(int line)
    {
        var target = ParseAssignTarget(allowAttribute: false);
        if (!Cur.IsName("in")) throw Unexpected("'in'");
        _i++;
        var iterable = ParseTupleNoCondition();
        Expr? filter = null;
        if (Cur.IsName("if")) { _i++; filter = ParseExpression(); }
        if (Cur.IsName("recursive")) throw Error(Cur.Line, "recursive for loops are not supported");
        ExpectBlockEnd();
        _loopDepth++;
        var body = ParseBlockBody("for", line, ["else", "endfor"], out var end);
        _loopDepth--;
        List<Node>? elseBody = null;
        if (end == "else")
        {
            ExpectBlockEnd();
            elseBody = ParseBlockBody("for", line, ["endfor"], out _);
        }
        ExpectBlockEnd();
        return new ForNode(line, target, iterable, filter, body, elseBody);
    }

    private Node ParseSet(int line)
    {
        var target = ParseAssignTarget(allowAttribute: true);
        if (Cur.IsOp("="))
        {
            _i++;
            var value = ParseTuple();
            ExpectBlockEnd();
            return new SetNode(line, target, value);
        }
        List<FilterExpr> filters = [];
        if (Cur.IsOp("|")) { _i++; filters = ParseFilterChain(null); }
        ExpectBlockEnd();
        int depth = _loopDepth;
        _loopDepth = 0;
        var body = ParseBlockBody("set", line, ["endset"], out _);
        _loopDepth = depth;
        ExpectBlockEnd();
        return new SetBlockNode(line, target, filters, body);
    }

    private Node ParseMacro(int line)
    {
        string name = ExpectName("a macro name");
        ExpectOp("(");
        var parameters = new List<(string, Expr?)>();
        while (!Cur.IsOp(")"))
        {
            if (parameters.Count > 0) ExpectOp(",");
            if (Cur.IsOp(")")) break;
            string p = ExpectName("a parameter name");
            Expr? def = null;
            if (Cur.IsOp("=")) { _i++; def = ParseExpression(); }
            parameters.Add((p, def));
        }
        _i++;
        ExpectBlockEnd();
        int depth = _loopDepth;
        _loopDepth = 0;
        var body = ParseBlockBody("macro", line, ["endmacro"], out _);
        _loopDepth = depth;
        if (Cur.Kind == TokenKind.Name) _i++;
        ExpectBlockEnd();
        return new MacroNode(line, name, parameters, body);
    }

    private Target ParseAssignTarget(bool allowAttribute)
    {
        int line = Cur.Line;
        bool paren = Cur.IsOp("(");
        if (paren) _i++;
        string first = ExpectName("a variable name");
        if (allowAttribute && !paren && Cur.IsOp("."))
        {
            _i++;
            return new AttrTarget(line, first, ExpectName("an attribute name"));
        }
        if (!Cur.IsOp(","))
        {
            if (paren) ExpectOp(")");
            return new NameTarget(line, first);
        }
        var names = new List<string> { first };
        while (Cur.IsOp(","))
        {
            _i++;
            if (Cur.Kind != TokenKind.Name) break;
            names.Add(Next().Value);
        }
        if (paren) ExpectOp(")");
        return new TupleTarget(line, names);
    }

    // ---- expressions ----

    private Expr ParseTuple()
    {
        int line = Cur.Line;
        var first = ParseExpression();
        if (!Cur.IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (Cur.IsOp(","))
        {
            _i++;
            if (IsExpressionEnd()) break;
            items.Add(ParseExpression());
        }
        return new TupleExpr(line, items);
    }

    private Expr ParseTupleNoCondition()
    {
        int line = Cur.Line;
        var first = ParseOr();
        if (!Cur.IsOp(",")) return first;
        var items = new List<Expr> { first };
        while (Cur.IsOp(","))
        {
            _i++;
            if (IsExpressionEnd() || Cur.IsName("if")) break;
            items.Add(ParseOr());
        }
        return new TupleExpr(line, items);
    }

    private bool IsExpressionEnd() =>
        Cur.Kind is TokenKind.BlockEnd or TokenKind.VarEnd or TokenKind.Eof || Cur.IsOp(")") || Cur.IsOp("]") || Cur.IsOp("}");

    private Expr ParseExpression()
    {
        Enter(Cur.Line);
        var expr = ParseOr();
        while (Cur.IsName("if"))
        {
            int line = Next().Line;
            var cond = ParseOr();
            Expr? otherwise = null;
            if (Cur.IsName("else")) { _i++; otherwise = ParseExpression(); }
            expr = new CondExpr(line, cond, expr, otherwise);
        }
        _nesting--;
        return expr;
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Cur.IsName("or")) { int line = Next().Line; left = new OrExpr(line, left, ParseAnd()); }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Cur.IsName("and")) { int line = Next().Line; left = new AndExpr(line, left, ParseNot()); }
        return left;
    }

    private Expr ParseNot()
    {
        if (Cur.IsName("not"))
        {
            int line = Next().Line;
            Enter(line);
            var operand = ParseNot();
            _nesting--;
            return new NotExpr(line, operand);
        }
        return ParseCompare();
    }

    private static readonly string[] CompareOps = ["==", "!=", "<", "<=", ">", ">="];

    private Expr ParseCompare()
    {
        int line = Cur.Line;
        var first = ParseMath1();
        List<(string, Expr)>? rest = null;
        while (true)
        {
            string op;
            if (Cur.Kind == TokenKind.Operator && Array.IndexOf(CompareOps, Cur.Value) >= 0) { op = Cur.Value; _i++; }
            else if (Cur.IsName("in")) { op = "in"; _i++; }
            else if (Cur.IsName("not") && Peek().IsName("in")) { op = "not in"; _i += 2; }
            else break;
            (rest ??= []).Add((op, ParseMath1()));
        }
        return rest == null ? first : new CompareExpr(line, first, rest);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        while (Cur.IsOp("+") || Cur.IsOp("-"))
        {
            var op = Next();
            left = new BinaryExpr(op.Line, op.Value, left, ParseConcat());
        }
        return left;
    }

    private Expr ParseConcat()
    {
        int line = Cur.Line;
        var first = ParseMath2();
        if (!Cur.IsOp("~")) return first;
        var parts = new List<Expr> { first };
        while (Cur.IsOp("~")) { _i++; parts.Add(ParseMath2()); }
        return new ConcatExpr(line, parts);
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        while (Cur.IsOp("*") || Cur.IsOp("/") || Cur.IsOp("//") || Cur.IsOp("%"))
        {
            var op = Next();
            left = new BinaryExpr(op.Line, op.Value, left, ParsePow());
        }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary(true);
        while (Cur.IsOp("**"))
        {
            var op = Next();
            left = new BinaryExpr(op.Line, op.Value, left, ParseUnary(true));
        }
        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Expr node;
        if (Cur.IsOp("-") || Cur.IsOp("+"))
        {
            var op = Next();
            Enter(op.Line);
            node = new UnaryExpr(op.Line, op.Value, ParseUnary(false));
            _nesting--;
        }
        else node = ParsePrimary();
        node = ParsePostfix(node);
        return withFilter ? ParseFilterTail(node) : node;
    }

    private Expr ParsePrimary()
    {
        var tok = Cur;
        switch (tok.Kind)
        {
            case TokenKind.Name:
                _i++;
                return tok.Value switch
                {
                    "true" or "True" => new ConstExpr(tok.Line, true),
                    "false" or "False" => new ConstExpr(tok.Line, false),
                    "none" or "None" => new ConstExpr(tok.Line, null),
                    _ => new NameExpr(tok.Line, tok.Value),
                };
            case TokenKind.String:
                _i++;
                string s = tok.Value;
                while (Cur.Kind == TokenKind.String) s += Next().Value;
                return new ConstExpr(tok.Line, s);
            case TokenKind.Integer:
            case TokenKind.Float:
                _i++;
                return new ConstExpr(tok.Line, tok.Literal);
            case TokenKind.Operator when tok.Value == "(":
            {
                _i++;
                if (Cur.IsOp(")")) { _i++; return new TupleExpr(tok.Line, []); }
                var first = ParseExpression();
                if (Cur.IsOp(")")) { _i++; return first; }
                var items = new List<Expr> { first };
                while (Cur.IsOp(","))
                {
                    _i++;
                    if (Cur.IsOp(")")) break;
                    items.Add(ParseExpression());
                }
                ExpectOp(")");
                return new TupleExpr(tok.Line, items);
            }
            case TokenKind.Operator when tok.Value == "[":
            {
                _i++;
                var items = new List<Expr>();
                while (!Cur.IsOp("]"))
                {
                    if (items.Count > 0) { ExpectOp(","); if (Cur.IsOp("]")) break; }
                    items.Add(ParseExpression());
                }
                _i++;
                return new ListExpr(tok.Line, items);
            }
            case TokenKind.Operator when tok.Value == "{":
            {
                _i++;
                var items = new List<(Expr, Expr)>();
                while (!Cur.IsOp("}"))
                {
                    if (items.Count > 0) { ExpectOp(","); if (Cur.IsOp("}")) break; }
                    var key = ParseExpression();
                    ExpectOp(":");
                    items.Add((key, ParseExpression()));
                }
                _i++;
                return new DictExpr(tok.Line, items);
            }
            default:
                throw Unexpected("an expression");
        }
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            var tok = Cur;
            if (tok.IsOp("."))
            {
                _i++;
                if (Cur.Kind == TokenKind.Name) node = new GetAttrExpr(tok.Line, node, Next().Value);
                else if (Cur.Kind == TokenKind.Integer) node = new GetItemExpr(tok.Line, node, new ConstExpr(tok.Line, Next().Literal));
                else throw Unexpected("an attribute name after '.'");
            }
            else if (tok.IsOp("[")) { _i++; node = ParseSubscript(node, tok.Line); }
            else if (tok.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    private Expr ParseSubscript(Expr node, int line)
    {
        Expr? start = null, stop = null, step = null;
        if (!Cur.IsOp(":")) start = ParseExpression();
        if (!Cur.IsOp(":"))
        {
            ExpectOp("]");
            return new GetItemExpr(line, node, start!);
        }
        _i++;
        if (!Cur.IsOp("]") && !Cur.IsOp(":")) stop = ParseExpression();
        if (Cur.IsOp(":"))
        {
            _i++;
            if (!Cur.IsOp("]")) step = ParseExpression();
        }
        ExpectOp("]");
        return new SliceExpr(line, node, start, stop, step);
    }

    private (List<Expr> Args, List<(string, Expr)> Kwargs) ParseCallArgs()
    {
        ExpectOp("(");
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!Cur.IsOp(")"))
        {
            if (args.Count + kwargs.Count > 0) { ExpectOp(","); if (Cur.IsOp(")")) break; }
            if (Cur.Kind == TokenKind.Name && Peek().IsOp("="))
            {
                string key = Next().Value;
                _i++;
                kwargs.Add((key, ParseExpression()));
            }
            else
            {
                if (kwargs.Count > 0) throw Error(Cur.Line, "positional argument after a keyword argument");
                args.Add(ParseExpression());
            }
        }
        _i++;
        return (args, kwargs);
    }

    private Expr ParseCall(Expr function)
    {
        int line = Cur.Line;
        var (args, kwargs) = ParseCallArgs();
        return new CallExpr(line, function, args, kwargs);
    }

    private Expr ParseFilterTail(Expr node)
    {
        while (true)
        {
            if (Cur.IsOp("|")) node = ParseFilterChain(node)[^1];
            else if (Cur.IsName("is")) node = ParseTest(node);
            else if (Cur.IsOp("(")) node = ParseCall(node);
            else return node;
        }
    }

    /// <summary>Parses one or more '| name(args)' applied in turn; each filter's Value is the previous one.</summary>
    private List<FilterExpr> ParseFilterChain(Expr? node)
    {
        var chain = new List<FilterExpr>();
        bool first = node == null;
        while (first || Cur.IsOp("|"))
        {
            if (!first) _i++;
            first = false;
            int line = Cur.Line;
            string name = ExpectName("a filter name");
            while (Cur.IsOp(".") && Peek().Kind == TokenKind.Name) { _i++; name += "." + Next().Value; }
            if (!TemplateBuiltins.HasFilter(name)) throw Error(line, $"no filter named '{name}'");
            var (args, kwargs) = Cur.IsOp("(") ? ParseCallArgs() : ([], []);
            var filter = new FilterExpr(line, chain.Count > 0 ? chain[^1] : node, name, args, kwargs);
            chain.Add(filter);
        }
        return chain;
    }

    private Expr ParseTest(Expr node)
    {
        int line = Next().Line;
        bool negated = false;
        if (Cur.IsName("not")) { _i++; negated = true; }
        string name = ExpectName("a test name");
        while (Cur.IsOp(".") && Peek().Kind == TokenKind.Name) { _i++; name += "." + Next().Value; }
        if (!TemplateBuiltins.HasTest(name)) throw Error(line, $"no test named '{name}'");
        var args = new List<Expr>();
        if (Cur.IsOp("("))
        {
            var (a, _) = ParseCallArgs();
            args = a;
        }
        else if ((Cur.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float || Cur.IsOp("[") || Cur.IsOp("{"))
                 && !Cur.IsName("else") && !Cur.IsName("or") && !Cur.IsName("and"))
        {
            if (Cur.IsName("is")) throw Error(Cur.Line, "you cannot chain multiple tests with 'is'");
            args.Add(ParsePostfix(ParsePrimary()));
        }
        return new TestExpr(line, node, name, args, negated);
    }
}
