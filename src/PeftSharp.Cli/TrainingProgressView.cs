using Spectre.Console;
using PeftSharp.Training;

namespace PeftSharp.Cli;

/// <summary>
/// Renders training progress: a live Spectre.Console bar (step/total, epoch, loss, learning rate,
/// tokens/s, ETA) on a terminal, one plain line per logged step when output is redirected. Before training, the same bar
/// shows the training data being tokenized (<see cref="TokenizationProgress"/>; nothing when output is redirected).
/// </summary>
public sealed class TrainingProgressView : ITrainerCallback, IProgress<Data.TokenizationProgress>
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

    private static readonly (string Key, string Label)[] ProgressMetrics =
        [("rewards/margins", "margin"), ("rewards/accuracies", "acc"), ("accuracy", "acc"), ("margin", "margin"), ("reward", "reward")];

    public void Report(Data.TokenizationProgress value)
    {
        if (_task != null) TokenizationProgressView.Show(_task, value);
    }

    public void OnStep(TrainingProgress p, TrainerControl control)
    {
        string line = $"step {p.Step}/{p.TotalSteps}  epoch {p.Epoch:F2}  loss {p.Loss:F4}  lr {p.LearningRate:0.###e0}  {p.TokensPerSecond:F0} tok/s  ETA {p.Eta:hh\\:mm\\:ss}";
        // A preference trainer's headline metrics (DPO/KTO/ORPO: reward margin and accuracy; reward model: accuracy; GRPO: mean reward).
        foreach (var (key, label) in ProgressMetrics)
            if (p.Metrics.TryGetValue(key, out var value)) line += $"  {label} {value:F3}";
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
