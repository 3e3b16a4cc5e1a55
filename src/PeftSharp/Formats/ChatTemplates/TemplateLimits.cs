using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// The work a chat template may ask for. A template comes from a downloaded tokenizer_config.json, so
/// it must not be able to exhaust the stack, the memory or the time of the process. Each limit is far
/// above what real templates need (the templates under ../shared render with nesting below 10, a few
/// hundred loop iterations and a few kilobytes of output) and its error names the limit.
/// </summary>
public static class TemplateLimits
{
    /// <summary>Nesting of expressions (parentheses, brackets, unary operators) and of statement blocks in the source.</summary>
    public const int MaxNesting = 100;

    /// <summary>Macros calling macros (recursion included).</summary>
    public const int MaxCallDepth = 100;

    /// <summary>Nesting of lists, dicts and namespaces that repr, str, tojson and comparisons walk.</summary>
    public const int MaxValueDepth = 100;

    /// <summary>Characters in one string the template makes (repetition, join, tojson...) and in the rendered output.</summary>
    public const int MaxStringLength = 64 * 1024 * 1024;

    /// <summary>Items in one list the template makes (repetition, concatenation).</summary>
    public const int MaxListLength = 4 * 1024 * 1024;

    /// <summary>Loop iterations of one render, all loops together.</summary>
    public const long MaxLoopIterations = 2_000_000;

    /// <summary>Wall-clock time of one render.</summary>
    public static readonly TimeSpan TimeBudget = TimeSpan.FromSeconds(10);

    internal static ChatTemplateException Exceeded(string what, string limit) =>
        new($"the template exceeds the limit on {what} ({limit}); a real chat template needs far less");

    internal static void CheckString(long length, string what)
    {
        if (length > MaxStringLength) throw Exceeded($"string length ({what} would make {length:N0} characters)", $"{MaxStringLength:N0} characters");
    }

    internal static void CheckList(long count, string what)
    {
        if (count > MaxListLength) throw Exceeded($"list length ({what} would make {count:N0} items)", $"{MaxListLength:N0} items");
    }

    internal static void CheckValueDepth(int depth)
    {
        if (depth > MaxValueDepth) throw Exceeded("value nesting (a list, dict or namespace nested this deep, or containing itself)", $"{MaxValueDepth} levels");
        EnsureStack();
    }

    /// <summary>A last guard under the explicit limits: a deep .NET stack becomes a template error, never a process abort.</summary>
    internal static void EnsureStack()
    {
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw Exceeded("nesting", "the thread's stack");
    }
}

/// <summary>The counters of one render: loop iterations, macro call depth and the time budget.</summary>
internal sealed class RenderBudget
{
    /// <summary>The budget of the render running on this thread, for the value helpers (comparisons in sort, unique, in) to tick.</summary>
    [ThreadStatic] private static RenderBudget? t_current;

    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _iterations, _ticks;
    public int CallDepth;

    /// <summary>Makes this the current render's budget until the returned scope is disposed.</summary>
    public Scope Enter()
    {
        var previous = t_current;
        t_current = this;
        return new Scope(previous);
    }

    public readonly struct Scope(RenderBudget? previous) : IDisposable
    {
        public void Dispose() => t_current = previous;
    }

    /// <summary>One unit of work in a value helper (a comparison): the time budget is checked every 4096.</summary>
    public static void Tick()
    {
        var budget = t_current;
        if (budget != null && (++budget._ticks & 4095) == 0) budget.CheckTime();
    }

    public void Iteration()
    {
        if (++_iterations > TemplateLimits.MaxLoopIterations)
            throw TemplateLimits.Exceeded("loop iterations", $"{TemplateLimits.MaxLoopIterations:N0} per render");
        CheckTime();
    }

    public void CheckTime()
    {
        if (_clock.Elapsed > TemplateLimits.TimeBudget)
            throw TemplateLimits.Exceeded("render time", $"{TemplateLimits.TimeBudget.TotalSeconds:0} s per render");
    }
}
