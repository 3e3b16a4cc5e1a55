using PeftSharp.Autograd;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using PeftSharp.Tests.Kernels;
using PeftSharp.Tests.Quantization;
using PeftSharp.Training;

namespace PeftSharp.Tests.Models;

/// <summary>
/// training's <c>bf16: true</c> (<see cref="BaseCompute.UseBf16"/>): frozen base linears multiply bf16-rounded operands.
/// Their products against the managed VDPBF16PS mirror bit for bit, the fallback (kernel off, no Vector512) against the
/// f32 kernel on the same rounded operands bit for bit, whole models (generated tiny Llama and GPT-2) against their f32
/// path within bf16 tolerance, decoding left in f32, and what the notice says for each kind of base.
/// </summary>
[Collection(SimdForcingCollection.Name)]
public sealed unsafe class Bf16ComputeTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-bf16-compute").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A generated tiny model (init-model --preset tiny) of <paramref name="arch"/>, weights stored as <paramref name="dtype"/>.</summary>
    private string Generated(string arch, string dtype)
    {
        string folder = Path.Combine(_root, $"{arch}-{dtype}");
        if (!Directory.Exists(folder)) ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, Preset = "tiny", Dtype = dtype, Seed = 11 });
        return folder;
    }

    /// <summary>W (n×k) stored as <paramref name="type"/>: the raw storage and the same values widened to f32.</summary>
    private static (byte[] Storage, float[] Values) Weight(DType type, int n, int k, int seed)
    {
        float[] values = FourBitGemmTests.Uniform(n * k, seed);
        if (type == DType.F32) return (values.SelectMany(BitConverter.GetBytes).ToArray(), values);
        ushort[] bits = type == DType.BF16
            ? values.Select(Precision.F32ToBf16).ToArray()
            : values.Select(v => BitConverter.HalfToUInt16Bits((Half)v)).ToArray();
        float[] widened = type == DType.BF16 ? bits.Select(Precision.Bf16ToF32).ToArray() : bits.Select(b => (float)BitConverter.UInt16BitsToHalf(b)).ToArray();
        return (bits.SelectMany(BitConverter.GetBytes).ToArray(), widened);
    }

    private static void Forward(float* x, byte* w, DType type, float* y, int m, int n, int k)
    {
        if (type == DType.F32) Gemm.LinearForward(x, (float*)w, null, y, m, n, k, DType.BF16);
        else Gemm.LinearForward(x, (ushort*)w, type, null, y, m, n, k, DType.BF16);
    }

    private static void BackwardInput(float* dy, byte* w, DType type, float* dx, int m, int n, int k)
    {
        if (type == DType.F32) Gemm.LinearBackwardInput(dy, (float*)w, dx, m, n, k, accumulate: false, DType.BF16);
        else Gemm.LinearBackwardInput(dy, (ushort*)w, type, dx, m, n, k, accumulate: false, DType.BF16);
    }

    /// <summary>
    /// A base layer's forward (X·Wᵀ) and input gradient (dY·W) in bf16 compute on the emitted kernel equal the managed mirror
    /// of VDPBF16PS over the whole product (<see cref="Bf16Dot.ReferenceProduct"/>) bit for bit: W stored bf16, f16 or f32,
    /// depths within one 256-deep block and across blocks, odd depths, edge tiles, one and two threads.
    /// </summary>
    [Theory]
    [InlineData(DType.BF16, 1)]
    [InlineData(DType.BF16, 2)]
    [InlineData(DType.F16, 1)]
    [InlineData(DType.F32, 2)]
    public void ProductsEqualTheManagedMirrorBitForBit(DType type, int threads)
    {
        if (!Bf16Dot.Emitted) return;
        using var forced = Simd.Force(SimdPath.Vector512);
        int saved = Parallelism.MaxThreads;
        Parallelism.MaxThreads = threads;
        try
        {
            int seed = 0;
            foreach (var (m, n, k) in new[] { (70, 130, 300), (37, 101, 333), (200, 48, 257), (9, 500, 64), (64, 96, 512) })
            {
                seed += 3;
                var (storage, _) = Weight(type, n, k, seed);
                float[] x = FourBitGemmTests.Uniform(m * k, seed + 1), dy = FourBitGemmTests.Uniform(m * n, seed + 2);
                float[] y = new float[m * n], yRef = new float[m * n], dx = new float[m * k], dxRef = new float[m * k];
                fixed (byte* w = storage)
                fixed (float* px = x, pdy = dy, py = y, pyr = yRef, pdx = dx, pdxr = dxRef)
                {
                    Forward(px, w, type, py, m, n, k);
                    BackwardInput(pdy, w, type, pdx, m, n, k);
                    Bf16Dot.ReferenceProduct(GemmOperand.F32(px, k, false), new GemmOperand(w, k, true, type), m, n, k, pyr, n);
                    Bf16Dot.ReferenceProduct(GemmOperand.F32(pdy, n, false), new GemmOperand(w, k, false, type), m, k, n, pdxr, k);
                }
                AssertBits(yRef, y, $"Y {type} m={m} n={n} k={k}");
                AssertBits(dxRef, dx, $"dX {type} m={m} n={n} k={k}");
            }
        }
        finally
        {
            Parallelism.MaxThreads = saved;
        }
    }

    /// <summary>
    /// The fallback where the kernel is off (<c>PEFTSHARP_BF16_DOT=0</c>'s switch, or no Vector512): the same bf16-rounded
    /// operands on the f32 kernel, bit for bit the f32 product of operands rounded beforehand.
    /// </summary>
    [Theory]
    [InlineData(SimdPath.Vector512, DType.BF16)]
    [InlineData(SimdPath.Vector512, DType.F32)]
    [InlineData(SimdPath.Vector256, DType.BF16)]
    [InlineData(SimdPath.Vector256, DType.F16)]
    public void KernelOffRoundsTheSameOperandsOnTheF32Kernel(SimdPath path, DType type)
    {
        using var forced = Simd.Force(path);
        using var off = Bf16Dot.Disable();
        const int m = 70, n = 130, k = 300;
        var (storage, widened) = Weight(type, n, k, 21);
        float[] x = FourBitGemmTests.Uniform(m * k, 22), dy = FourBitGemmTests.Uniform(m * n, 23);
        float[] xr = FourBitGemmTests.Rounded(x, DType.BF16), dyr = FourBitGemmTests.Rounded(dy, DType.BF16), wr = FourBitGemmTests.Rounded(widened, DType.BF16);
        float[] y = new float[m * n], yRef = new float[m * n], dx = new float[m * k], dxRef = new float[m * k];
        fixed (byte* w = storage)
        fixed (float* px = x, pdy = dy, pxr = xr, pdyr = dyr, pwr = wr, py = y, pyr = yRef, pdx = dx, pdxr = dxRef)
        {
            Forward(px, w, type, py, m, n, k);
            BackwardInput(pdy, w, type, pdx, m, n, k);
            Gemm.LinearForward(pxr, pwr, null, pyr, m, n, k);
            Gemm.LinearBackwardInput(pdyr, pwr, pdxr, m, n, k, accumulate: false);
        }
        AssertBits(yRef, y, $"Y {path} {type}");
        AssertBits(dxRef, dx, $"dX {path} {type}");
    }

    /// <summary>
    /// A LoRA step on a generated tiny model with bf16 compute against the same model's f32 products (the layers' own switch,
    /// <see cref="Ops.Float32Products"/>): the training loss, the logits, the evaluation loss and every LoRA gradient.
    /// Tolerance: one bf16 product is within 2⁻⁸·Σ|x||w| of the f32 one (each operand rounded to 8 significant bits,
    /// 2⁻⁹ relative); a 2-layer model chains about 6 such products from the embeddings to the logits (attention and MLP
    /// per layer, then the head), and the backward as many again, so the loss and logits are held to 6·2⁻⁸ ≈ 2.3% of
    /// their scale (the loss to twice the largest logit change) and the gradients (as a vector norm) to 12·2⁻⁸ ≈ 4.7%.
    /// Measured: logits 0.18–0.34% of their scale, gradients 0.22–0.35%, so the bounds hold with a margin of about ten and
    /// a wrong product (operands swapped, a block dropped: O(1) errors) fails; the two paths must also differ (bf16 really ran).
    /// </summary>
    [Theory]
    [InlineData("llama", "bfloat16")]
    [InlineData("gpt2", "bfloat16")]
    [InlineData("llama", "float32")]
    [InlineData("gpt2", "float32")]
    public void LoraStepWithinBf16ToleranceOfTheF32Path(string arch, string dtype)
    {
        using var model = CausalLM.Load(Generated(arch, dtype), new LoadOptions { Weights16 = dtype == "bfloat16" ? DType.BF16 : null });
        using var peft = PeftModel.Wrap(model, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.AllLinear }, rng: new Rng(3));
        var rng = new Rng(5);
        foreach (var p in peft.TrainableParameters) rng.FillNormal(p.AsSpan(), 0f, 0.05f); // B ≠ 0: A gets a gradient too
        var found = BaseCompute.UseBf16(model.Linears);
        int linears = model.Linears.Count;
        Assert.Equal(linears, found.Rounded);
        Assert.Equal(dtype == "bfloat16" ? linears : 0, found.Bf16Weights);
        Assert.All(model.Linears, s => Assert.IsType(dtype == "bfloat16" ? typeof(HalfLinear) : typeof(DenseLinear), s.Base));

        var batch = new TokenBatch(2, 40, Enumerable.Range(0, 80).Select(_ => rng.NextInt(model.VocabSize)).ToArray());
        var f32 = Step(float32: true);
        var bf16 = Step(float32: false);

        double logitScale = f32.Logits.Max(MathF.Abs), logitDiff = ModelGolden.MaxAbsDiff(bf16.Logits, f32.Logits);
        Assert.InRange(logitDiff, 1e-7, 6 * Math.Pow(2, -8) * logitScale);
        // A row's loss, logsumexp(z) − z_target, moves by at most 2·max|Δz|; the loss is a mean of rows.
        Assert.InRange(Math.Abs(bf16.Loss - f32.Loss), 1e-7, 2 * logitDiff + 1e-5);
        Assert.InRange(Math.Abs(bf16.EvalLoss - f32.EvalLoss), 1e-7, 2 * logitDiff + 1e-5);
        Assert.InRange(RelativeNorm(bf16.Gradients, f32.Gradients), 1e-6, 12 * Math.Pow(2, -8));
        // Without gradients the evaluation loss scores vocabulary blocks through the same rounded head products.
        Assert.InRange(Math.Abs(bf16.EvalLoss - bf16.Loss), 0, 1e-5 * bf16.Loss);

        StepResult Step(bool float32)
        {
            using var tape = new Tape(1 << 20);
            var ops = new Ops(tape) { Float32Products = float32 };
            foreach (var p in peft.TrainableParameters) p.GradSpan().Clear();
            var loss = peft.Model.Loss(ops, batch);
            float value = loss.AsSpan()[0];
            tape.Backward(loss);
            tape.Reset();
            tape.GradEnabled = false;
            float eval = peft.Model.Loss(ops, batch).AsSpan()[0];
            float[] logits = peft.Model.Forward(ops, batch).AsSpan().ToArray();
            return new StepResult(value, eval, logits, peft.TrainableParameters.SelectMany(p => p.GradSpan().ToArray()).ToArray());
        }
    }

    private sealed record StepResult(float Loss, float EvalLoss, float[] Logits, float[] Gradients);

    /// <summary>KV-cache decoding keeps f32 products under bf16: a session's logits are the same bits as before bf16 was set.</summary>
    [Fact]
    public void DecodingStaysFloat32()
    {
        using var model = CausalLM.Load(Generated("llama", "bfloat16"));
        int[] prompt = [5, 9, 14, 3, 27, 8];
        float[] Decode()
        {
            using var session = model.StartDecoding(1, 16);
            var logits = new float[model.VocabSize];
            session.Append(prompt, [1, 1, 1, 1, 1, 1], prompt.Length, logits);
            var next = new float[model.VocabSize];
            session.Append([7], [1], 1, next);
            return [.. logits, .. next];
        }
        var before = Decode();
        Assert.True(BaseCompute.UseBf16(model.Linears).Bf16Weights > 0);
        Assert.Equal(before, Decode());
    }

    /// <summary>What bf16: true does to each kind of base layer, and that the notice says so.</summary>
    [Fact]
    public void NoticeSaysWhatEachBaseComputesIn()
    {
        var args = new TrainingArguments { Bf16 = true };
        string kernel = Bf16Dot.Enabled ? "on this CPU's AVX512-BF16 dot products" : "on the float32 kernel";

        using (var bf16 = CausalLM.Load(Generated("gpt2", "bfloat16"), new LoadOptions { Weights16 = DType.BF16 }))
        {
            string notice = args.ApplyPrecision(bf16, "bfloat16")!;
            Assert.Contains($"{bf16.Linears.Count} frozen base linears ({bf16.Linears.Count} with bf16 weights; storage stays model.dtype bfloat16)", notice);
            Assert.Contains(kernel, notice);
            Assert.Contains("LoRA adapters, trainable weights, norms, attention, activations, the loss and KV-cache generation stay float32", notice);
            Assert.All(bf16.Linears, s => Assert.Equal(DType.BF16, ((HalfLinear)s.Base).ComputeType));
        }

        // 4-bit bases keep bnb_4bit_compute_dtype; the tied bf16 output layer (not quantized) still takes bf16.
        using (var quantized = CausalLM.Load(Generated("gpt2", "bfloat16"), new LoadOptions { Weights16 = DType.BF16 }))
        {
            int count = QuantizedModel.QuantizeLinears(quantized, new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitComputeDtype = "float32" }).Count;
            string notice = args.ApplyPrecision(quantized, "bfloat16")!;
            Assert.Contains("1 frozen base linears (1 with bf16 weights;", notice);
            Assert.Contains($"{count} 4-bit layers compute in bnb_4bit_compute_dtype (float32), which bf16 does not override", notice);
            Assert.All(quantized.Linears.Select(s => s.Base).OfType<Linear4Bit>(), l => Assert.Equal(DType.F32, l.ComputeType));
            Assert.Equal(DType.BF16, ((HalfLinear)quantized.Linears[^1].Base).ComputeType);
        }

        // Frozen f32 weights are rounded per product as torch's autocast does.
        using (var f32 = CausalLM.Load(Generated("llama", "float32")))
        {
            string notice = args.ApplyPrecision(f32, "auto")!;
            Assert.Contains($"({f32.Linears.Count} with f32 weights;", notice);
            Assert.All(f32.Linears, s => Assert.Equal(DType.BF16, ((DenseLinear)s.Base).ComputeType));
        }

        // Full fine-tuning: every weight trains, nothing is rounded.
        using (var full = CausalLM.Load(Generated("llama", "float32"), new LoadOptions { FullFineTune = true }))
        {
            string notice = args.ApplyPrecision(full, "auto")!;
            Assert.Contains("no frozen dense or 16-bit base linear to compute in bf16, so every product stays float32", notice);
            Assert.All(full.Linears, s => Assert.Equal(DType.F32, ((DenseLinear)s.Base).ComputeType));
        }

        // fp16: a notice only; nothing changes.
        using (var f16 = CausalLM.Load(Generated("llama", "float32")))
        {
            string notice = new TrainingArguments { Fp16 = true }.ApplyPrecision(f16, "auto")!;
            Assert.StartsWith("fp16: true asks for float16 mixed precision; on CPU PeftSharp computes in float32", notice);
            Assert.All(f16.Linears, s => Assert.Equal(DType.F32, ((DenseLinear)s.Base).ComputeType));
            Assert.Null(new TrainingArguments().ApplyPrecision(f16, "auto"));
        }
    }

    /// <summary>A trainable weight refuses a bf16 compute type (no weight gradient is taken from rounded operands), and a base layer takes F32 or BF16 only.</summary>
    [Fact]
    public void TrainableWeightsAndOtherTypesAreRefused()
    {
        using var w = Parameter.Create("w", [8, 16], requiresGrad: true);
        using var x = Parameter.Create("x", [4, 16], requiresGrad: false);
        using var tape = new Tape(1 << 16);
        var e = Assert.Throws<ArgumentException>(() => new Ops(tape).Linear(x, w, null, DType.BF16));
        Assert.Contains("trainable weight", e.Message);
        var layer = DenseLinear.Create(new LinearModuleInfo("proj", 16, 8, HasBias: false, IsOutputLayer: false), trainable: false);
        using (layer) Assert.Contains("proj: a base layer computes in F32 or BF16, not F16", Assert.Throws<ArgumentException>(() => layer.ComputeType = DType.F16).Message);
    }

    private static double RelativeNorm(float[] actual, float[] expected)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            diff += Math.Pow(actual[i] - expected[i], 2);
            norm += Math.Pow(expected[i], 2);
        }
        return Math.Sqrt(diff / norm);
    }

    private static void AssertBits(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what} [{i}]: got {actual[i]:R}, expected {expected[i]:R}");
    }
}
