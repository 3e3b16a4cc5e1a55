using Spectre.Console;
using PeftSharp.Training;

namespace PeftSharp.Cli;

/// <summary>
/// Renders training progress: a live Spectre.Console bar (step/total, epoch, loss, learning rate,
/// tokens/s, ETA) on a terminal, one plain line per logged step when output is redirected.
/// </summary>
public sealed class TrainingProgressView : ITrainerCallback
{
    private readonly TextWriter _plain;
    private ProgressTask? _task;
    private int _lastPrinted;

    public TrainingProgressView(TextWriter plain) => _plain = plain;

    public static bool Interactive => !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs <paramref name="work"/> with this view attached to a live progress bar (or plain output).</summary>
    public T Run<T>(string title, Func<T> work)
    {
        if (!Interactive) return work();
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                _task = ctx.AddTask(Markup.Escape(title), maxValue: 1);
                result = work();
                _task.StopTask();
            });
        return result;
    }

    public void OnStep(TrainingProgress p, TrainerControl control)
    {
        // The trainer's own metrics (DPO's rewards/margins and accuracies, ...) follow the loss.
        string own = string.Concat(p.Metrics.Select(m => $"  {m.Key} {m.Value:F4}"));
        string line = $"step {p.Step}/{p.TotalSteps}  epoch {p.Epoch:F2}  loss {p.Loss:F4}{own}  lr {p.LearningRate:0.###e0}  {p.TokensPerSecond:F0} tok/s  ETA {p.Eta:hh\\:mm\\:ss}";
        if (_task != null)
        {
            _task.MaxValue = p.TotalSteps;
            _task.Value = p.Step;
            _task.Description = Markup.Escape(line);
        }
        else if (p.Step == p.TotalSteps || p.Step - _lastPrinted >= Math.Max(1, p.TotalSteps / 20))
        {
            _plain.WriteLine(line);
            _lastPrinted = p.Step;
        }
    }
}
