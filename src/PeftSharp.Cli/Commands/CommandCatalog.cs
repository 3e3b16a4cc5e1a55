using System.CommandLine;

namespace PeftSharp.Cli.Commands;

/// <summary>Every `peftsharp` subcommand; each lives in its own file and only parses and prints.</summary>
public static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return InfoCommand.Create();
        yield return PlanCommand.Create();
        yield return TrainCommand.Create();
        yield return DemoCommand.Create();
        yield return TokenizeCommand.Create();
        yield return DataCommand.Create();
        yield return InitModelCommand.Create();
        yield return GenerateCommand.Create();
        yield return ChatCommand.Create();
        yield return ServeCommand.Create();
        yield return InspectCommand.Create();
        yield return MergeCommand.Create();
        yield return ExportCommand.Create();
        yield return QuantizeCommand.Create();
        yield return EvalCommand.Create();
        yield return ScoreCommand.Create();
        yield return JudgeCommand.Create();
    }
}
