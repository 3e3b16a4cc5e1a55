using System.CommandLine;

namespace PeftSharp.Cli;

/// <summary>Runs the parsed command and maps failures to exit codes: 0 ok, 1 user error, 2 internal error.</summary>
public static class CliRunner
{
    public const int Ok = 0, UserError = 1, InternalError = 2;

    public static int Run(RootCommand root, string[] args, TextWriter? error = null)
    {
        error ??= Console.Error;
        try
        {
            var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
            return root.Parse(args).Invoke(config);
        }
        catch (Exception e) when (IsUserError(e))
        {
            error.WriteLine($"error: {e.Message}");
            return UserError;
        }
        catch (Exception e)
        {
            error.WriteLine($"internal error: {e}");
            return InternalError;
        }
    }

    private static bool IsUserError(Exception e) =>
        e is PeftSharpException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException;
}
