using System.CommandLine;

namespace PeftSharp.Cli;

/// <summary>
/// Runs the parsed command and maps failures to exit codes: 0 ok, 1 user error (bad input, a limit an
/// input file exceeded, or the file system refusing: a full disk, no permission, a missing file), 2 a bug.
/// </summary>
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
        catch (Exception e) when (IsUserError(Unwrap(e)))
        {
            error.WriteLine($"error: {Unwrap(e).Message}");
            LetTheLauncherForward(error);
            return UserError;
        }
        catch (Exception e)
        {
            error.WriteLine($"internal error: {e}");
            LetTheLauncherForward(error);
            return InternalError;
        }
    }

    /// <summary>
    /// Under mpirun the first rank to exit non-zero ends the job, and a line another rank (or this one) wrote just before
    /// can be lost in the launcher's teardown (seen under load: a refused run whose message never reached the terminal).
    /// The message is written after MPI has been finalized, so a rank that fails waits a moment before exiting to let the
    /// launcher forward it.
    /// </summary>
    private static void LetTheLauncherForward(TextWriter error)
    {
        if (!Training.Distributed.MpiLauncher.IsLaunched()) return;
        error.Flush();
        Thread.Sleep(TimeSpan.FromMilliseconds(500));
    }

    /// <summary>The exception parallel work wrapped (a single inner exception of an AggregateException).</summary>
    private static Exception Unwrap(Exception e)
    {
        while (e is AggregateException { InnerExceptions.Count: 1 } a) e = a.InnerExceptions[0];
        return e;
    }

    /// <summary>
    /// IOException covers a missing file or folder, a full disk and a file in use; its message names the
    /// path. UnauthorizedAccessException is a permission the user can grant.
    /// </summary>
    private static bool IsUserError(Exception e) =>
        e is PeftSharpException or IOException or UnauthorizedAccessException or InvalidDataException;
}
