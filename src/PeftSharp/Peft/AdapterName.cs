namespace PeftSharp.Peft;

/// <summary>
/// Adapter names become folder names (save_pretrained writes every adapter but the default into a
/// subfolder named after it), so a name is never a path: not empty, not "." or "..", no '/' or '\',
/// no control characters, at most 255 characters. An adapter named "../../x" or "/etc" would
/// otherwise be written outside the save folder.
/// </summary>
public static class AdapterName
{
    public const int MaxLength = 255;

    public static void Validate(string? name)
    {
        string? problem = name switch
        {
            null or "" => "is empty",
            "." or ".." => "is a relative folder reference",
            _ when name.Length > MaxLength => $"is longer than {MaxLength} characters",
            _ when name.IndexOfAny(['/', '\\']) >= 0 => "contains a path separator",
            _ when name.Any(char.IsControl) => "contains a control character",
            _ when Path.IsPathRooted(name) => "is an absolute path",
            _ => null,
        };
        if (problem != null)
            throw new PeftSharpException($"Adapter name \"{name}\" {problem}; an adapter name becomes a folder name, so use letters, digits, '-', '_' or '.' (for example \"default\" or \"summarize\").");
    }
}
