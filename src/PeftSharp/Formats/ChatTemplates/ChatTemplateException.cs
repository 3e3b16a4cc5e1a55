namespace PeftSharp.Formats.ChatTemplates;

/// <summary>
/// A chat template failed to parse or render. <see cref="Line"/> is the 1-based template line when
/// known. A template's own <c>raise_exception(msg)</c> produces this exception with exactly
/// <c>msg</c> as its message (as transformers surfaces it).
/// </summary>
public sealed class ChatTemplateException : PeftSharpException
{
    public int? Line { get; }

    public ChatTemplateException(string message, int? line = null) : base(message) => Line = line;

    /// <summary>True when the template itself raised it with raise_exception.</summary>
    internal bool FromTemplate { get; init; }
}
