using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// transformers' <c>bf16: true</c> (torch.autocast to bfloat16, where a linear layer multiplies bf16 copies of its input
/// and weight) for a model's frozen base linears: every frozen f32, BF16 or F16 weight gets compute type BF16, so its
/// forward and input-gradient products round both operands to bf16 and accumulate in f32. The weights' storage
/// (model.dtype) is left as it is: as torch_dtype and bf16 are in transformers, memory and compute are separate choices.
/// Trainable weights (LoRA's A and B, full fine-tuning, modules_to_save copies, a trained head) and 4-bit bases (which
/// have bnb_4bit_compute_dtype) are not changed; nor are norms, attention, activations or the loss, which always run in f32.
/// </summary>
public static class BaseCompute
{
    /// <summary>Sets compute type BF16 on every frozen dense or 16-bit base layer in <paramref name="linears"/>; says what it found.</summary>
    public static BaseComputeSummary UseBf16(IEnumerable<LinearSlot> linears)
    {
        int bf16 = 0, f16 = 0, f32 = 0, quantized = 0, trainable = 0;
        foreach (var slot in linears)
            switch (slot.Base)
            {
                case HalfLinear h:
                    h.ComputeType = DType.BF16;
                    if (h.Weight.DType == DType.BF16) bf16++;
                    else f16++;
                    break;
                case DenseLinear d when d.Weight.RequiresGrad:
                    trainable++;
                    break;
                case DenseLinear d:
                    d.ComputeType = DType.BF16;
                    f32++;
                    break;
                case { IsQuantized: true }:
                    quantized++;
                    break;
            }
        return new BaseComputeSummary(bf16, f16, f32, quantized, trainable);
    }

    /// <summary>A base layer's compute type: F32 or BF16.</summary>
    internal static DType Check(LinearModuleInfo info, DType type) => type is DType.F32 or DType.BF16 ? type
        : throw new ArgumentException($"{info.Name}: a base layer computes in F32 or BF16, not {type}.", nameof(type));
}

/// <summary>What <see cref="BaseCompute.UseBf16"/> found: base layers now in bf16 compute by weight dtype, and those it left alone.</summary>
public sealed record BaseComputeSummary(int Bf16Weights, int F16Weights, int F32Weights, int Quantized, int Trainable)
{
    public int Rounded => Bf16Weights + F16Weights + F32Weights;
}
