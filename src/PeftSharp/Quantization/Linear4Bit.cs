using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Kernels;

namespace PeftSharp.Quantization;

/// <summary>
/// bitsandbytes' <c>Linear4bit</c>: a frozen base linear layer whose weight [out, in] is a 4-bit (NF4/FP4) tensor,
/// blocks running along the rows of the flattened weight, multiplied in <see cref="ComputeType"/> by the
/// dequant-GEMM (<see cref="Kernels.Gemm.LinearForward4Bit"/>); the bias stays f32 and frozen. Its weight cannot be
/// changed in place (<see cref="CanModifyWeight"/> is false): merging an adapter goes through
/// <see cref="DequantizeWithDelta"/>, which returns dense f32 weights and never re-quantizes.
/// </summary>
public sealed unsafe class Linear4Bit : IBaseLinear
{
    /// <summary>Wraps an existing 4-bit weight (e.g. read from a bitsandbytes checkpoint); takes ownership of both.</summary>
    public Linear4Bit(LinearModuleInfo info, Quantized4BitTensor weight, Parameter? bias, DType computeType = DType.F32)
    {
        var shape = weight.State.Shape;
        if (shape.Length != 2 || shape[0] != info.OutFeatures || shape[1] != info.InFeatures)
            throw new PeftSharpException($"{info.Name}: 4-bit weight shape [{string.Join(", ", shape)}] is not [{info.OutFeatures}, {info.InFeatures}].");
        if (bias != null && bias.Length != info.OutFeatures)
            throw new PeftSharpException($"{info.Name}: bias {bias.ShapeText} is not [{info.OutFeatures}].");
        if (bias != null && bias.RequiresGrad)
            throw new ArgumentException($"{info.Name}: the bias of a 4-bit base layer is frozen.", nameof(bias));
        if (computeType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new PeftSharpException($"{info.Name}: the compute dtype must be float32, bfloat16 or float16, not {computeType}.");
        Info = info;
        Weight = weight;
        Bias = bias;
        ComputeType = computeType;
    }

    /// <summary>
    /// Quantizes a weight [out, in] (nn.Linear's layout; transpose GPT-2's Conv1D first) of type
    /// <paramref name="dtype"/> (F32, BF16 or F16) as transformers does when loading with <paramref name="config"/>:
    /// quant type, double quantization, block size and compute dtype from the config. The bias (f32, out) or null
    /// is copied; the source is not kept.
    /// </summary>
    public static Linear4Bit Quantize(LinearModuleInfo info, void* weight, DType dtype, float* bias, BitsAndBytesConfig config)
    {
        config.Validate();
        long count = (long)info.OutFeatures * info.InFeatures;
        var q = Quantized4BitTensor.Quantize(weight, dtype, count, [info.OutFeatures, info.InFeatures], config.QuantType,
            config.Bnb4bitBlockSize, config.Bnb4bitUseDoubleQuant);
        Parameter? b = null;
        if (info.HasBias)
        {
            if (bias == null) throw new PeftSharpException($"{info.Name}: the module has a bias, but none was given.");
            b = Parameter.Create(info.Name + ".bias", [info.OutFeatures], requiresGrad: false);
            new ReadOnlySpan<float>(bias, info.OutFeatures).CopyTo(b.AsSpan());
        }
        return new Linear4Bit(info, q, b, config.ComputeDType);
    }

    public LinearModuleInfo Info { get; }
    public bool IsQuantized => true;
    public Quantized4BitTensor Weight { get; }
    public Parameter? Bias { get; }

    /// <summary>The dtype the product runs in (bnb_4bit_compute_dtype): F32, BF16 or F16.</summary>
    public DType ComputeType { get; }

    public Tensor Forward(Ops ops, Tensor x) => ops.Linear4Bit(x, Weight, Bias, ComputeType);

    /// <summary>Only the f32 bias: the 4-bit weight is not an f32 parameter (it is saved through <see cref="BnbSerialization"/>).</summary>
    public IEnumerable<Parameter> Parameters => Bias == null ? [] : [Bias];

    /// <summary>The exact dequantization, table[code] · absmax in f32 (no rounding to the compute or original dtype).</summary>
    public void ReadWeight(float* destination) =>
        Weight.DequantizeRows(0, Info.OutFeatures, 0, Info.InFeatures, destination, Info.InFeatures);

    public bool CanModifyWeight => false;

    public void AddToWeight(float* delta, float scale) =>
        throw new InvalidOperationException($"{Info.Name}: a 4-bit weight cannot be changed in place; use DequantizeWithDelta to merge into dense f32 weights.");

    /// <summary>
    /// The merged dense weight W = dequantize(W₄) + scale · delta, f32 [out, in] in a new buffer (the caller owns it),
    /// with delta f32 [out, in] or null. The 4-bit weight is unchanged: merging never re-quantizes.
    /// </summary>
    public NativeBuffer<float> DequantizeWithDelta(float* delta, float scale)
    {
        var result = new NativeBuffer<float>(Weight.ElementCount, clear: false);
        ReadWeight(result.Pointer);
        if (delta != null)
        {
            int rowLength = Info.InFeatures;
            for (long r = 0; r < Info.OutFeatures; r++)
            {
                var row = new Span<float>(result.Pointer + r * rowLength, rowLength);
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(delta + r * rowLength, rowLength), scale, row, row);
            }
        }
        return result;
    }

    /// <summary>A dense f32 layer (weight frozen or trainable as asked) with the merged weight and a copy of the bias.</summary>
    public DenseLinear ToDense(float* delta, float scale, bool trainable = false)
    {
        var dense = DenseLinear.Create(Info, trainable);
        using (var merged = DequantizeWithDelta(delta, scale))
            merged.Span.CopyTo(dense.Weight.AsSpan());
        if (Bias != null) Bias.AsSpan().CopyTo(dense.Bias!.AsSpan());
        return dense;
    }

    public void Dispose()
    {
        Weight.Dispose();
        Bias?.Dispose();
    }
}
