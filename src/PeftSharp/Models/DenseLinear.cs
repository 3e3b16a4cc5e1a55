using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// A linear layer with an f32 weight [out, in] and an optional bias, frozen or trainable
/// (full fine-tuning). y = x·Wᵀ + b.
/// </summary>
public sealed unsafe class DenseLinear : IBaseLinear
{
    public DenseLinear(LinearModuleInfo info, Parameter weight, Parameter? bias)
    {
        if (weight.Shape.Length != 2 || weight.Shape[0] != info.OutFeatures || weight.Shape[1] != info.InFeatures)
            throw new ArgumentException($"{info.Name}: weight {weight.ShapeText} is not [{info.OutFeatures}, {info.InFeatures}].");
        if (bias != null && bias.Length != info.OutFeatures)
            throw new ArgumentException($"{info.Name}: bias {bias.ShapeText} is not [{info.OutFeatures}].");
        Info = info;
        Weight = weight;
        Bias = bias;
    }

    /// <summary>A zero weight (and bias when the module has one), owned by the layer.</summary>
    public static DenseLinear Create(LinearModuleInfo info, bool trainable)
    {
        var w = Parameter.Create(info.Name + ".weight", [info.OutFeatures, info.InFeatures], trainable);
        var b = info.HasBias ? Parameter.Create(info.Name + ".bias", [info.OutFeatures], trainable) : null;
        return new DenseLinear(info, w, b);
    }

    public LinearModuleInfo Info { get; }
    public Parameter Weight { get; }
    public Parameter? Bias { get; }

    /// <summary>
    /// F32 (the default) or BF16 (<c>bf16: true</c>, <see cref="BaseCompute"/>): while the weight is frozen, x, dy and W
    /// are rounded to bf16 for the products (f32 accumulation and outputs); a trainable weight always multiplies in f32.
    /// </summary>
    public DType ComputeType
    {
        get => _computeType;
        set => _computeType = BaseCompute.Check(Info, value);
    }

    private DType _computeType = DType.F32;

    /// <summary>The compute type of this layer's products under <paramref name="ops"/>.</summary>
    internal DType ProductType(Ops ops) => Weight.RequiresGrad ? DType.F32 : ops.ProductType(ComputeType);

    public Tensor Forward(Ops ops, Tensor x) => ops.Linear(x, Weight, Bias, ProductType(ops));

    public IEnumerable<Parameter> Parameters => Bias == null ? [Weight] : [Weight, Bias];

    public void ReadWeight(float* destination) =>
        Buffer.MemoryCopy(Weight.Data, destination, Weight.Length * sizeof(float), Weight.Length * sizeof(float));

    public bool CanModifyWeight => true;

    public void AddToWeight(float* delta, float scale)
    {
        long n = Weight.Length;
        for (long i = 0; i < n; i += int.MaxValue / 2)
        {
            int len = (int)Math.Min(int.MaxValue / 2, n - i);
            System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(
                new ReadOnlySpan<float>(delta + i, len), scale, new ReadOnlySpan<float>(Weight.Data + i, len), new Span<float>(Weight.Data + i, len));
        }
    }

    public void Dispose()
    {
        Weight.Dispose();
        Bias?.Dispose();
    }
}
