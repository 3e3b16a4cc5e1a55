using PeftSharp.Models;

namespace PeftSharp.Cli;

/// <summary>
/// The seam through which commands load models: set by whatever wires the model implementations
/// (GPT-2, Llama) and adapters (PEFT) in; tests replace it with small models.
/// </summary>
public static class ModelLoading
{
    /// <summary>A model folder (config.json, safetensors) → a causal LM.</summary>
    public static Func<string, ICausalLM> Load { get; set; } = _ => throw new PeftSharpException("model loading is not wired yet");

    /// <summary>A model and an adapter folder → the model with the adapter applied.</summary>
    public static Func<ICausalLM, string, ICausalLM> LoadAdapter { get; set; } = (_, _) => throw new PeftSharpException("adapter loading is not wired yet");
}
