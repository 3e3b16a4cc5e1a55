using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>How <see cref="CausalLM.Load"/> (and <see cref="CausalLM.CreateRandom"/>) builds a model.</summary>
public sealed record LoadOptions
{
    /// <summary>Every parameter trainable (full fine-tuning); implies <see cref="Float32"/>.</summary>
    public bool FullFineTune { get; init; }

    /// <summary>Parameter names (transformers' names) to make trainable, besides <see cref="FullFineTune"/>; their storage becomes owned f32.</summary>
    public Func<string, bool>? Trainable { get; init; }

    /// <summary>Widen every BF16/F16 weight into owned f32 instead of keeping views of the file.</summary>
    public bool Float32 { get; init; }

    /// <summary>
    /// Keep frozen matrices (linear weights, embeddings) in this 16-bit type (BF16 or F16), as transformers'
    /// torch_dtype=torch.bfloat16 does: weights stored in another dtype (f32, or the other 16-bit type) are rounded to
    /// nearest even into owned copies, half the memory of f32; weights already of this type stay views of the file.
    /// Null: keep the stored dtype. Ignored for trainable weights and with <see cref="Float32"/>.
    /// </summary>
    public DType? Weights16 { get; init; }

    /// <summary>Recompute each decoder layer's forward during backward (see <see cref="CausalLM.GradientCheckpointing"/>).</summary>
    public bool GradientCheckpointing { get; init; }

    /// <summary>
    /// Builds a module's base layer instead of reading its weight from the checkpoint (null: read it), e.g. a
    /// 4-bit layer from a bitsandbytes checkpoint. The layer's bias, if any, is the override's business.
    /// </summary>
    public Func<LinearModuleInfo, IBaseLinear?>? LinearOverride { get; init; }

    internal bool IsTrainable(string name) => FullFineTune || (Trainable?.Invoke(name) ?? false);
}
