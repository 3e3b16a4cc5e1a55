namespace PeftSharp.Formats.ChatTemplates;

internal abstract record Node(int Line);

internal sealed record TextNode(int Line, string Text) : Node(Line);
internal sealed record OutputNode(int Line, Expr Value) : Node(Line);
internal sealed record IfNode(int Line, List<(Expr Condition, List<Node> Body)> Branches, List<Node>? Else) : Node(Line);
internal sealed record ForNode(int Line, Target Target, Expr Iterable, Expr? Filter, List<Node> Body, List<Node>? Else) : Node(Line);
internal sealed record SetNode(int Line, Target Target, Expr Value) : Node(Line);
internal sealed record SetBlockNode(int Line, Target Target, List<FilterExpr> Filters, List<Node> Body) : Node(Line);
internal sealed record MacroNode(int Line, string Name, List<(string Name, Expr? Default)> Parameters, List<Node> Body) : Node(Line);
internal sealed record FilterBlockNode(int Line, List<FilterExpr> Filters, List<Node> Body) : Node(Line);
internal sealed record GenerationNode(int Line, List<Node> Body) : Node(Line);
internal sealed record BreakNode(int Line) : Node(Line);
internal sealed record ContinueNode(int Line) : Node(Line);

/// <summary>Assignment target: a name, a tuple of names, or <c>ns.attr</c>.</summary>
internal abstract record Target(int Line);
internal sealed record NameTarget(int Line, string Name) : Target(Line);
internal sealed record TupleTarget(int Line, List<string> Names) : Target(Line);
internal sealed record AttrTarget(int Line, string Object, string Attribute) : Target(Line);

internal abstract record Expr(int Line);
internal sealed record ConstExpr(int Line, object? Value) : Expr(Line);
internal sealed record NameExpr(int Line, string Name) : Expr(Line);
internal sealed record ListExpr(int Line, List<Expr> Items) : Expr(Line);
internal sealed record TupleExpr(int Line, List<Expr> Items) : Expr(Line);
internal sealed record DictExpr(int Line, List<(Expr Key, Expr Value)> Items) : Expr(Line);
internal sealed record GetAttrExpr(int Line, Expr Object, string Name) : Expr(Line);
internal sealed record GetItemExpr(int Line, Expr Object, Expr Key) : Expr(Line);
internal sealed record SliceExpr(int Line, Expr Object, Expr? Start, Expr? Stop, Expr? Step) : Expr(Line);
internal sealed record CallExpr(int Line, Expr Function, List<Expr> Args, List<(string Name, Expr Value)> Kwargs) : Expr(Line);
internal sealed record FilterExpr(int Line, Expr? Value, string Name, List<Expr> Args, List<(string Name, Expr Value)> Kwargs) : Expr(Line);
internal sealed record TestExpr(int Line, Expr Value, string Name, List<Expr> Args, bool Negated) : Expr(Line);
internal sealed record BinaryExpr(int Line, string Op, Expr Left, Expr Right) : Expr(Line);
internal sealed record UnaryExpr(int Line, string Op, Expr Operand) : Expr(Line);
internal sealed record AndExpr(int Line, Expr Left, Expr Right) : Expr(Line);
internal sealed record OrExpr(int Line, Expr Left, Expr Right) : Expr(Line);
internal sealed record NotExpr(int Line, Expr Operand) : Expr(Line);
internal sealed record CompareExpr(int Line, Expr First, List<(string Op, Expr Right)> Rest) : Expr(Line);
internal sealed record ConcatExpr(int Line, List<Expr> Parts) : Expr(Line);
internal sealed record CondExpr(int Line, Expr Condition, Expr Then, Expr? Else) : Expr(Line);
