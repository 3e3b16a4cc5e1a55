using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// A linear layer inside a model, addressed by its full module name. A model calls
/// <see cref="Forward"/> on whatever layer sits in each <see cref="LinearSlot"/>: PEFT replaces a
/// slot's layer with a LoRA wrapper around it, QLoRA with a 4-bit base layer.
/// Weights are always seen as [out, in] (nn.Linear's layout); GPT-2's Conv1D weights, stored
/// [in, out], are transposed on load and back on save (<see cref="LinearModuleInfo.IsConv1D"/>).
/// </summary>
public interface ILinearLayer : IDisposable
{
    LinearModuleInfo Info { get; }

    /// <summary>x (rows, in) → y (rows, out).</summary>
    Tensor Forward(Ops ops, Tensor x);

    /// <summary>Every parameter this layer holds, named as in the checkpoint (base weight and bias, adapters).</summary>
    IEnumerable<Parameter> Parameters { get; }
}

/// <summary>A base (non-adapter) linear layer: its weight can be read, and changed where the storage allows.</summary>
public unsafe interface IBaseLinear : ILinearLayer
{
    /// <summary>The bias (out), or null.</summary>
    Parameter? Bias { get; }

    /// <summary>Writes the effective weight, f32 [out, in] row-major, into <paramref name="destination"/> (widening or dequantizing as needed).</summary>
    void ReadWeight(float* destination);

    /// <summary>Whether <see cref="AddToWeight"/> works (false for 4-bit or read-only mapped storage).</summary>
    bool CanModifyWeight { get; }

    /// <summary>W += scale · delta, with delta f32 [out, in] (in-place merge and unmerge).</summary>
    void AddToWeight(float* delta, float scale);

    /// <summary>Whether the weight is stored quantized (a saved dense model is then dequantized, not re-quantized).</summary>
    bool IsQuantized => false;
}

/// <summary>One linear module of a model; <see cref="Layer"/> is replaceable (LoRA wrapping, 4-bit).</summary>
public sealed class LinearSlot(LinearModuleInfo info, ILinearLayer layer)
{
    public LinearModuleInfo Info { get; } = info;
    public string Name => Info.Name;
    public ILinearLayer Layer { get; set; } = layer;

    /// <summary>The base layer under any wrappers.</summary>
    public IBaseLinear Base => Layer switch
    {
        IBaseLinear b => b,
        IWrappedLinear w => w.BaseLayer,
        _ => throw new InvalidOperationException($"{Name}: layer {Layer.GetType().Name} exposes no base layer."),
    };
}

/// <summary>A layer that wraps a base layer (LoRA, DoRA, modules_to_save).</summary>
public interface IWrappedLinear : ILinearLayer
{
    IBaseLinear BaseLayer { get; }

    /// <summary>
    /// The weight this layer computes with, f32 [out, in], into <paramref name="destination"/> (what a saved model holds:
    /// the active adapters folded in), using <paramref name="scratch"/> (as long) as it needs; false when it is the base
    /// layer's own weight (adapters disabled or already merged).
    /// </summary>
    bool TryReadEffectiveWeight(Span<float> destination, Span<float> scratch) => false;

    /// <summary>The bias this layer adds (a trained or copied bias), or the base layer's.</summary>
    Parameter? EffectiveBias => BaseLayer.Bias;
}
