using System.CommandLine;

namespace PeftSharp.Cli.Commands;

/// <summary>Every `peftsharp` subcommand; each lives in its own file and only parses and prints.</summary>
public static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return InfoCommand.Create();
        yield return TokenizeCommand.Create();
        yield return EvalCommand.Create();
    }
}
