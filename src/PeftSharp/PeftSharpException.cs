namespace PeftSharp;

/// <summary>
/// An error the user can fix: bad input, a wrong path, a config value out of range, a file of the
/// wrong shape. Its message says what was expected and names the file, line or key involved.
/// The CLI exits with code 1 for these and 2 for anything else.
/// </summary>
public class PeftSharpException : Exception
{
    public PeftSharpException(string message) : base(message) { }
    public PeftSharpException(string message, Exception inner) : base(message, inner) { }
}
