using PeftSharp.Kernels;
using PeftSharp.Tensors;
using static PeftSharp.Tests.Kernels.GradCheck;

namespace PeftSharp.Tests.Kernels;

/// <summary>Every vector path (forced) against the double oracles, on lengths that exercise the tails.</summary>
[Collection(SimdForcingCollection.Name)]
public unsafe class SimdAgreementTests
{
    public static TheoryData<SimdPath, int> Cases()
    {
        var data = new TheoryData<SimdPath, int>();
        foreach (var path in new[] { SimdPath.Scalar, SimdPath.Vector256, SimdPath.Vector512 })
        foreach (int n in new[] { 1, 7, 33, 1023 })
            data.Add(path, n);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ActivationsAndTheirBackward(SimdPath path, int n)
    {
        var rng = new Rng((ulong)n);
        var x = RandomFloats(rng, n, 4f);
        var u = RandomFloats(rng, n);
        var dy = RandomFloats(rng, n);
        var y = new float[n];
        var dx = new float[n];
        var du = new float[n];
        var expectedGelu = new float[n];
        var expectedDx = new float[n];
        fixed (float* px = x, pu = u, pdy = dy, py = y, pdx = dx, pdu = du, peg = expectedGelu, ped = expectedDx)
        {
            using (Simd.Force(SimdPath.Scalar)) Activations.GeluBackward(px, pdy, ped, n);
            using (Simd.Force(path))
            {
                Activations.GeluForward(px, py, n);
                AssertClose(KernelReference.Gelu(D(x)), y, 1e-5, "gelu");
                Activations.GeluBackward(px, pdy, pdx, n);
                AssertClose(D(expectedDx), dx, 1e-5, "dgelu");
                Activations.SiluForward(px, py, n);
                AssertClose(KernelReference.Silu(D(x)), y, 1e-5, "silu");
                Activations.SwiGluForward(px, pu, py, n);
                AssertClose(KernelReference.SwiGlu(D(x), D(u)), y, 1e-5, "swiglu");
                Array.Clear(dx);
                Activations.SwiGluBackward(px, pu, pdy, pdx, pdu, n);
            }
            var expectedDu = new float[n];
            var expectedDg = new float[n];
            fixed (float* pedu = expectedDu, pedg = expectedDg)
            using (Simd.Force(SimdPath.Scalar)) Activations.SwiGluBackward(px, pu, pdy, pedg, pedu, n);
            AssertClose(D(expectedDg), dx, 1e-5, "dgate");
            AssertClose(D(expectedDu), du, 1e-5, "dup");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NormsSoftmaxAndCrossEntropyRows(SimdPath path, int n)
    {
        var rng = new Rng((ulong)n + 100);
        int rows = 2;
        var x = RandomFloats(rng, rows * n, 3f);
        var w = RandomFloats(rng, n);
        var b = RandomFloats(rng, n);
        var y = new float[rows * n];
        var stat1 = new float[rows];
        var stat2 = new float[rows];
        var losses = new float[rows];
        int[] targets = [n - 1, 0];
        using var _ = Simd.Force(path);
        fixed (float* px = x, pw = w, pb = b, py = y, ps1 = stat1, ps2 = stat2, pl = losses)
        fixed (int* pt = targets)
        {
            Norms.LayerNormForward(px, pw, pb, ps1, ps2, py, rows, n, 1e-5f);
            AssertClose(KernelReference.LayerNorm(D(x), D(w), D(b), n, 1e-5), y, 1e-5, "layernorm");
            Norms.RmsNormForward(px, pw, ps1, py, rows, n, 1e-6f);
            AssertClose(KernelReference.RmsNorm(D(x), D(w), n, 1e-6), y, 1e-5, "rmsnorm");
            Softmax.Forward(px, py, rows, n);
            AssertClose(KernelReference.Softmax(D(x), n), y, 1e-5, "softmax");
            float loss = CrossEntropy.Forward(px, pt, pl, ps1, rows, n);
            Assert.Equal(KernelReference.CrossEntropy(D(x), targets, n), loss, 1e-4);
            CrossEntropy.Backward(px, pt, ps1, 1f, py, rows, n, accumulate: false);
            var probabilities = KernelReference.Softmax(D(x), n);
            for (int r = 0; r < rows; r++) probabilities[r * n + targets[r]] -= 1;
            AssertClose(probabilities.Select(p => p / rows).ToArray(), y, 1e-5, "dlogits");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void RopeAndReductions(SimdPath path, int n)
    {
        var rng = new Rng((ulong)n + 200);
        int headDim = 2 * n, heads = 2, tokens = 2;
        var x = RandomFloats(rng, tokens * heads * headDim);
        var invFreq = new float[n];
        var cos = new float[4 * n];
        var sin = new float[4 * n];
        var y = new float[x.Length];
        int[] positions = [3, 1];
        using var _ = Simd.Force(path);
        fixed (float* px = x, pf = invFreq, pc = cos, ps = sin, py = y)
        fixed (int* pp = positions)
        {
            Rope.InverseFrequencies(500000.0, headDim, pf);
            Rope.BuildTable(pf, n, 4, pc, ps);
            Rope.Forward(px, pp, pc, ps, py, tokens, heads, headDim, 4);
            AssertClose(KernelReference.Rope(D(x), positions, D(invFreq), heads, headDim), y, 1e-5, "rope");
            Assert.Equal(x.Max(), Elementwise.Max(x.Length, px));
            Assert.Equal(x.Select(v => (double)v * v).Sum(), Elementwise.Dot(x.Length, px, px), 1e-3 * x.Length);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Bf16AndF16Conversions(SimdPath path, int n)
    {
        var rng = new Rng((ulong)n + 300);
        var x = RandomFloats(rng, n, 100f);
        x[0] = n == 1 ? float.NaN : 1.00390625f; // exactly halfway between two bf16 values: ties to even (1.0)
        var bf = new ushort[n];
        var half = new Half[n];
        var back = new float[n];
        using var _ = Simd.Force(path);
        fixed (float* px = x, pb = back)
        fixed (ushort* pbf = bf)
        fixed (Half* ph = half)
        {
            Precision.F32ToBf16(px, pbf, n);
            for (int i = 0; i < n; i++) Assert.Equal(Bf16Reference(x[i]), bf[i]);
            Precision.Bf16ToF32(pbf, pb, n);
            for (int i = 0; i < n; i++) Assert.Equal(BitConverter.UInt32BitsToSingle((uint)bf[i] << 16), back[i]);
            Precision.F32ToF16(px, ph, n);
            for (int i = 0; i < n; i++) Assert.Equal((Half)x[i], half[i]);
            Precision.F16ToF32(ph, pb, n);
            for (int i = 0; i < n; i++) Assert.Equal((float)half[i], back[i]);
        }
        if (n > 1) Assert.Equal(0x3F80, bf[0]);
        else Assert.True(float.IsNaN(Precision.Bf16ToF32(bf[0])));
    }

    /// <summary>Round to nearest even via double arithmetic on the value grid (independent of the bit trick).</summary>
    private static ushort Bf16Reference(float value)
    {
        if (float.IsNaN(value)) return (ushort)((BitConverter.SingleToUInt32Bits(value) >> 16) | 0x40);
        uint bits = BitConverter.SingleToUInt32Bits(value);
        ushort down = (ushort)(bits >> 16), up = (ushort)(down + 1);
        double lo = Math.Abs((double)Precision.Bf16ToF32(down) - value), hi = Math.Abs((double)Precision.Bf16ToF32(up) - value);
        if (lo < hi) return down;
        if (hi < lo) return up;
        return (down & 1) == 0 ? down : up;
    }
}
