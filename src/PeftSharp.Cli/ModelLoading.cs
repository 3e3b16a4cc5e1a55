using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Cli;

/// <summary>The one place commands get a model from a folder, and attach an adapter to it.</summary>
public static class ModelLoading
{
    /// <summary>Loads the causal LM in <paramref name="folder"/>.</summary>
    public static ICausalLM Load(string folder) => Quantization.QuantizedModel.Load(folder);

    /// <summary>
    /// A loader for a --dtype option as model.dtype reads it: auto keeps the stored dtype, float32 widens on load,
    /// bfloat16/float16 keep the frozen matrices in 16 bits (rounding f32 checkpoints on load).
    /// </summary>
    public static Func<string, ICausalLM> LoaderFor(string dtype) => dtype switch
    {
        "auto" => Load,
        "float32" => folder => Quantization.QuantizedModel.Load(folder, new LoadOptions { Float32 = true }),
        "bfloat16" => folder => Quantization.QuantizedModel.Load(folder, new LoadOptions { Weights16 = Tensors.DType.BF16 }),
        "float16" => folder => Quantization.QuantizedModel.Load(folder, new LoadOptions { Weights16 = Tensors.DType.F16 }),
        _ => throw new PeftSharpException($"--dtype {dtype}: expected auto, float32, bfloat16 or float16."),
    };

    /// <summary>The --dtype option of the commands that load a model to run it.</summary>
    public static System.CommandLine.Option<string> DtypeOption() => new("--dtype")
    {
        Description = "Weights in memory: auto (as stored), float32, bfloat16 or float16 (rounds an f32 checkpoint on load: half the memory).",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>Applies the PEFT adapter in <paramref name="adapterFolder"/> to <paramref name="model"/>; returns the model to use.</summary>
    public static ICausalLM ApplyAdapter(ICausalLM model, string adapterFolder) =>
        PeftModel.FromPretrained(model, adapterFolder).Model;
}
