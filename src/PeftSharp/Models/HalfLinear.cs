using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// A frozen linear layer whose weight [out, in] stays BF16/F16 (a view of the memory-mapped
/// checkpoint): the GEMM widens it panel by panel, forward and input-gradient alike. Its weight is
/// not a <see cref="Parameter"/> and cannot be modified (merge LoRA into an f32 copy instead).
/// </summary>
public sealed unsafe class HalfLinear : IBaseLinear
{
    public HalfLinear(LinearModuleInfo info, HalfMatrix weight, Parameter? bias)
    {
        if (weight.Rows != info.OutFeatures || weight.Columns != info.InFeatures)
            throw new ArgumentException($"{info.Name}: weight {weight.ShapeText} is not [{info.OutFeatures}, {info.InFeatures}].");
        if (bias != null && bias.Length != info.OutFeatures)
            throw new ArgumentException($"{info.Name}: bias {bias.ShapeText} is not [{info.OutFeatures}].");
        Info = info;
        Weight = weight;
        Bias = bias;
    }

    public LinearModuleInfo Info { get; }
    public HalfMatrix Weight { get; }
    public Parameter? Bias { get; }

    /// <summary>
    /// F32 (the default: W widened, f32 products) or BF16 (<c>bf16: true</c>, <see cref="BaseCompute"/>): x, dy and W
    /// rounded to bf16 for the products, on the AVX512-BF16 kernel where the CPU has it; f32 accumulation and outputs.
    /// </summary>
    public DType ComputeType
    {
        get => _computeType;
        set => _computeType = BaseCompute.Check(Info, value);
    }

    private DType _computeType = DType.F32;

    /// <summary>The compute type of this layer's products under <paramref name="ops"/>.</summary>
    internal DType ProductType(Ops ops) => ops.ProductType(ComputeType);

    public Tensor Forward(Ops ops, Tensor x) => ops.Linear(x, Weight, Bias, ProductType(ops));

    public IEnumerable<Parameter> Parameters => Bias == null ? [] : [Bias];

    public void ReadWeight(float* destination) => Weight.WidenRows(0, Weight.Rows, destination);

    public bool CanModifyWeight => false;

    public void AddToWeight(float* delta, float scale) =>
        throw new InvalidOperationException($"{Info.Name}: the weight is a read-only {Weight.DType} view of the checkpoint; load with Float32 to modify it.");

    /// <summary>Frees the bias, and the weight when it is a copy only this layer uses (a view belongs to the checkpoint).</summary>
    public void Dispose()
    {
        Bias?.Dispose();
        Weight.DisposeOwned();
    }
}
