using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Cli;

/// <summary>The one place commands get a model from a folder, and attach an adapter to it.</summary>
public static class ModelLoading
{
    /// <summary>Loads the causal LM in <paramref name="folder"/>.</summary>
    public static ICausalLM Load(string folder) => Quantization.QuantizedModel.Load(folder);

    /// <summary>Applies the PEFT adapter in <paramref name="adapterFolder"/> to <paramref name="model"/>; returns the model to use.</summary>
    public static ICausalLM ApplyAdapter(ICausalLM model, string adapterFolder) =>
        PeftModel.FromPretrained(model, adapterFolder).Model;
}
