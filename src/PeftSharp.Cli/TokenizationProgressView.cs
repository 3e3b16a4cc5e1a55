using Spectre.Console;
using PeftSharp.Data;

namespace PeftSharp.Cli;

/// <summary>
/// Renders <see cref="TokenizationProgress"/> on a Spectre.Console bar: rows done of the total (when the files give it), MB/s of
/// text. Only on an interactive terminal: with output redirected nothing is drawn.
/// </summary>
public static class TokenizationProgressView
{
    /// <summary>Shows the progress on <paramref name="task"/> (a bar of another view, such as training's).</summary>
    public static void Show(ProgressTask task, TokenizationProgress p)
    {
        task.MaxValue = Math.Max(1, p.TotalRows ?? p.Rows);
        task.Value = p.Rows;
        task.Description = Markup.Escape(p.Describe());
    }

    /// <summary>Runs <paramref name="work"/> with a bar of its own on a terminal (its progress reporter is then non-null).</summary>
    public static T Run<T>(Func<IProgress<TokenizationProgress>?, T> work)
    {
        if (!TrainingProgressView.Interactive) return work(null);
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("tokenizing", maxValue: 1);
                result = work(new Reporter(task));
                task.StopTask();
            });
        return result;
    }

    private sealed class Reporter(ProgressTask task) : IProgress<TokenizationProgress>
    {
        public void Report(TokenizationProgress value) => Show(task, value);
    }
}
