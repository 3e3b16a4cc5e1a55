using PeftSharp.Models;

namespace PeftSharp.Cli;

/// <summary>The single seam through which commands load a model folder (wired by the model loader).</summary>
public static class ModelLoading
{
    public static Func<string, ICausalLM> Load { get; set; } = _ => throw new PeftSharpException("model loading is not wired yet");
}
