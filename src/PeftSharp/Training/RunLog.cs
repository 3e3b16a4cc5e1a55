using System.Text.Json.Nodes;
using PeftSharp.Formats;
using PeftSharp.Reporting;

namespace PeftSharp.Training;

/// <summary>
/// Where a run's log entries go: log_history (trainer_state.json), the callbacks, a live
/// <c>metrics.live.jsonl</c> appended entry by entry while the run goes, TensorBoard event files when
/// report_to asks for them, and at the end of a run that succeeded <c>metrics.jsonl</c> and
/// <c>trainer_state.json</c>, each written whole. A run that fails leaves the previous run's files as they were.
/// </summary>
internal sealed class RunLog
{
    public const string LiveFileName = "metrics.live.jsonl";
    private readonly string _outputDir;
    private readonly bool _writer;
    private readonly IReadOnlyList<ITrainerCallback> _callbacks;
    private readonly TensorBoardWriter? _tensorBoard;

    public RunLog(string outputDir, bool writer, IReadOnlyList<ITrainerCallback> callbacks, IReadOnlyList<string> reportTo, string loggingDir)
    {
        _outputDir = outputDir;
        _writer = writer;
        _callbacks = callbacks;
        if (writer && reportTo.Contains("tensorboard")) _tensorBoard = new TensorBoardWriter(loggingDir);
    }

    private string LivePath => Path.Combine(_outputDir, LiveFileName);

    /// <summary>Starts the live file with the entries a resumed run carries over from its checkpoint.</summary>
    public void Start(IEnumerable<JsonObject> history)
    {
        if (!_writer) return;
        AtomicFile.WriteAllText(LivePath, string.Concat(history.Select(e => e.ToJsonString() + "\n")));
    }

    public void Write(TrainerState state, JsonObject entry)
    {
        state.LogHistory.Add(entry);
        foreach (var c in _callbacks) c.OnLog(entry);
        if (!_writer) return;
        File.AppendAllText(LivePath, entry.ToJsonString() + "\n");
        _tensorBoard?.Write(entry);
    }

    /// <summary>The run succeeded: metrics.jsonl and trainer_state.json replace the previous run's, the live file goes.</summary>
    public void Finish(TrainerState state)
    {
        _tensorBoard?.Dispose();
        if (!_writer) return;
        AtomicFile.WriteAllText(Path.Combine(_outputDir, Checkpointing.MetricsFileName), string.Concat(state.LogHistory.Select(e => e.ToJsonString() + "\n")));
        state.Write(Path.Combine(_outputDir, TrainerState.FileName));
        File.Delete(LivePath);
    }
}
