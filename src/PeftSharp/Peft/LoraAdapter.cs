using PeftSharp.Autograd;
using PeftSharp.Tensors;

namespace PeftSharp.Peft;

/// <summary>
/// One named LoRA adapter of one module: A [r, in], B [out, r], the scaling (lora_alpha / r or
/// lora_alpha / √r), the dropout on the adapter's input, and with DoRA the magnitude vector m [out].
/// Parameter names follow PEFT's module tree: `&lt;module&gt;.lora_A.&lt;adapter&gt;.weight`.
/// </summary>
public sealed class LoraAdapter : IDisposable
{
    internal LoraAdapter(string module, string name, int rank, double scaling, float dropout, Parameter a, Parameter b, Parameter? magnitude, Rng rng)
    {
        Module = module;
        Name = name;
        Rank = rank;
        Scaling = scaling;
        Dropout = dropout;
        A = a;
        B = b;
        Magnitude = magnitude;
        DropoutRng = rng;
    }

    public string Module { get; }
    public string Name { get; }
    public int Rank { get; }
    /// <summary>The factor on B·A (lora_alpha / r, or lora_alpha / √r with use_rslora).</summary>
    public double Scaling { get; }
    public float Dropout { get; }
    /// <summary>lora_A [r, in].</summary>
    public Parameter A { get; }
    /// <summary>lora_B [out, r].</summary>
    public Parameter B { get; }
    /// <summary>DoRA's magnitude m [out] (lora_magnitude_vector), or null for plain LoRA.</summary>
    public Parameter? Magnitude { get; }
    public bool UseDora => Magnitude != null;
    internal Rng DropoutRng { get; }

    public IEnumerable<Parameter> Parameters => Magnitude == null ? [A, B] : [A, B, Magnitude];

    public long ParameterCount => A.Length + B.Length + (Magnitude?.Length ?? 0);

    public static string ParameterName(string module, string kind, string adapter) => $"{module}.{kind}.{adapter}.weight";

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        Magnitude?.Dispose();
    }
}
