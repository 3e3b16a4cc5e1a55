using PeftSharp.Kernels;
using PeftSharp.Quantization;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Quantization;

[Collection(PeftSharp.Tests.Kernels.SimdForcingCollection.Name)]
public unsafe class Quantized4BitTensorTests
{
    [Fact]
    public void FirstElementGoesInTheHighNibble()
    {
        // NF4 codes 15 (1.0), 0 (-1.0), 7 (0.0) and 8 (0.0796) with absmax 2.
        float[] values = [2f, -2f, 0f, 0.07958029955625534f * 2f, 1.4459136f];
        using var q = Quantized4BitTensor.Quantize(values, [5], QuantType.Nf4);
        Assert.Equal(3, q.Packed.Length);
        Assert.Equal(0xF0, q.Packed.Span[0]);
        Assert.Equal(0x78, q.Packed.Span[1]);
        Assert.Equal(0xE7, q.Packed.Span[2]); // odd count: the last low nibble is the code of 0
        Assert.Equal([2f], q.State.Absmax!);
        var restored = new float[5];
        q.Dequantize(restored);
        Assert.Equal([2f, -2f, 0f, 0.07958029955625534f * 2f, 0.7229568362236023f * 2f], restored);
    }

    [Theory]
    [InlineData(QuantType.Nf4, 64)]
    [InlineData(QuantType.Fp4, 64)]
    [InlineData(QuantType.Nf4, 32)]
    [InlineData(QuantType.Fp4, 256)]
    public void ValuesThatAreCodeTimesAbsmaxRoundTripExactly(QuantType type, int blockSize)
    {
        var table = FourBitCodes.Table(type);
        var random = new Random(5);
        int count = blockSize * 5 + 7;
        var values = new float[count];
        var expectedCodes = new byte[count];
        for (int b = 0; b * blockSize < count; b++)
        {
            float absmax = 0.5f + b;
            for (int i = b * blockSize; i < Math.Min(count, (b + 1) * blockSize); i++)
            {
                int code = i == b * blockSize ? (type == QuantType.Nf4 ? 0 : 11) : random.Next(16); // each block reaches -absmax
                expectedCodes[i] = (byte)code;
                values[i] = table[code] * absmax;
            }
        }
        using var q = Quantized4BitTensor.Quantize(values, [count], type, blockSize);
        var restored = new float[count];
        q.Dequantize(restored);
        Assert.Equal(values, restored);
        for (int i = 0; i < count; i++)
        {
            int code = (q.Packed.Span[i / 2] >> (i % 2 == 0 ? 4 : 0)) & 0xF;
            Assert.Equal(table[expectedCodes[i]], table[code]);
        }
    }

    [Fact]
    public void PartialLastBlockHasItsOwnAbsmax()
    {
        var values = Gaussian.Sample(64 * 3 + 5, 21);
        values[64 * 3 + 2] = -9f;
        using var q = Quantized4BitTensor.Quantize(values, [values.Length], QuantType.Nf4);
        Assert.Equal(4, q.State.BlockCount);
        Assert.Equal(9f, q.State.Absmax![3]);
        Assert.Equal(values.Take(64).Max(Math.Abs), q.State.Absmax[0]);
        Assert.Equal(99, q.Packed.Length);
        var restored = new float[values.Length];
        q.Dequantize(restored);
        Assert.Equal(-9f, restored[64 * 3 + 2]);
    }

    [Fact]
    public void Nf4BeatsFp4OnGaussianWeightsAndBothStayWithinBounds()
    {
        var values = Gaussian.Sample(64 * 1024, 1);
        var (nf4Mae, nf4Rms) = Error(values, QuantType.Nf4, false);
        var (fp4Mae, fp4Rms) = Error(values, QuantType.Fp4, false);
        Assert.True(nf4Mae < fp4Mae, $"NF4 mean abs error {nf4Mae} should be below FP4's {fp4Mae}");
        Assert.True(nf4Rms < fp4Rms);
        // NF4 on N(0, 1) in blocks of 64: about 0.073 mean abs error; FP4 about 0.097.
        Assert.InRange(nf4Mae, 0.06, 0.085);
        Assert.InRange(fp4Mae, 0.085, 0.11);
        var (dqMae, _) = Error(values, QuantType.Nf4, true);
        Assert.InRange(dqMae, nf4Mae * 0.999, nf4Mae * 1.01);
    }

    private static (double Mae, double Rms) Error(float[] values, QuantType type, bool doubleQuant)
    {
        using var q = Quantized4BitTensor.Quantize(values, [values.Length / 64, 64], type, 64, doubleQuant);
        var restored = new float[values.Length];
        q.Dequantize(restored);
        double abs = 0, sq = 0;
        for (int i = 0; i < values.Length; i++)
        {
            double d = values[i] - restored[i];
            abs += Math.Abs(d);
            sq += d * d;
        }
        return (abs / values.Length, Math.Sqrt(sq / values.Length));
    }

    [Fact]
    public void DoubleQuantizedAbsmaxStaysCloseToTheFloatAbsmax()
    {
        var values = Gaussian.Sample(64 * 1000 + 3, 2, 0.02f);
        using var plain = Quantized4BitTensor.Quantize(values, [values.Length], QuantType.Nf4, 64, false);
        using var nested = Quantized4BitTensor.Quantize(values, [values.Length], QuantType.Nf4, 64, true);
        Assert.True(nested.State.IsNested);
        Assert.Equal(1001, nested.State.QuantizedAbsmax!.Length);
        Assert.Equal(4, nested.State.Nested!.Absmax.Length);
        Assert.Equal(256, nested.State.Nested.BlockSize);
        var exact = plain.State.Absmax!;
        Assert.Equal(exact.Average(a => (double)a), nested.State.Offset, 1e-6);
        for (int b = 0; b < exact.Length; b++)
        {
            float centeredMax = nested.State.Nested.Absmax[b / 256];
            float restored = nested.State.GetAbsmax(b);
            Assert.Equal(nested.State.Nested.Code[nested.State.QuantizedAbsmax[b]] * centeredMax + nested.State.Offset, restored);
            Assert.True(Math.Abs(restored - exact[b]) <= centeredMax * 0.0071f, $"block {b}: {exact[b]} -> {restored}");
        }
        // The packed codes do not depend on how absmax is stored.
        Assert.Equal(plain.Packed.Span.ToArray(), nested.Packed.Span.ToArray());
    }

    [Fact]
    public void BitsPerParameterMatchQLoRA()
    {
        var values = Gaussian.Sample(4096 * 64, 4);
        using var plain = Quantized4BitTensor.Quantize(values, [4096, 64], QuantType.Nf4);
        using var nested = Quantized4BitTensor.Quantize(values, [4096, 64], QuantType.Nf4, 64, true);
        Assert.InRange(plain.BitsPerParameter, 4.49, 4.6);
        Assert.InRange(nested.BitsPerParameter, 4.12, 4.2);
        Assert.Equal(4.5, plain.BitsPerParameter, 1e-9);
        Assert.Equal(4 + 8.0 / 64 + 32.0 / (64 * 256) + 32.0 / values.Length, nested.BitsPerParameter, 1e-9);
    }

    public static TheoryData<int, int, QuantType, bool> SimdCases()
    {
        var data = new TheoryData<int, int, QuantType, bool>();
        foreach (int n in new[] { 1, 7, 33, 1023, 4099 })
        foreach (int blockSize in new[] { 32, 64, 4096 })
        {
            data.Add(n, blockSize, QuantType.Nf4, n % 2 == 1);
            data.Add(n, blockSize, QuantType.Fp4, n % 2 == 0);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(SimdCases))]
    public void SimdPathsAgreeExactlyWithScalar(int n, int blockSize, QuantType type, bool roundToBFloat16)
    {
        var values = Gaussian.Sample(n, n + blockSize);
        byte[] packed;
        float[] absmax, restored = new float[n];
        using (Simd.Force(SimdPath.Scalar))
        {
            using var q = Quantized4BitTensor.Quantize(values, [n], type, blockSize);
            packed = q.Packed.Span.ToArray();
            absmax = q.State.Absmax!;
            q.Dequantize(restored, roundToBFloat16);
        }
        foreach (var path in new[] { SimdPath.Vector256, SimdPath.Vector512 })
        {
            using var _ = Simd.Force(path);
            using var q = Quantized4BitTensor.Quantize(values, [n], type, blockSize);
            Assert.Equal(packed, q.Packed.Span.ToArray());
            Assert.Equal(absmax, q.State.Absmax!);
            var got = new float[n];
            q.Dequantize(got, roundToBFloat16);
            Assert.Equal(restored, got);
        }
        if (roundToBFloat16) Assert.All(restored, v => Assert.Equal(0u, BitConverter.SingleToUInt32Bits(v) & 0xFFFF));
    }

    [Fact]
    public void BFloat16AndHalfInputQuantizeLikeTheirFloatValues()
    {
        var values = Gaussian.Sample(1000, 8);
        var bf16 = values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray();
        var half = values.Select(v => (Half)v).ToArray();
        var bf16AsFloat = bf16.Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16)).ToArray();
        var halfAsFloat = half.Select(h => (float)h).ToArray();
        foreach (var path in new[] { SimdPath.Scalar, SimdPath.Vector256, SimdPath.Vector512 })
        {
            using var _ = Simd.Force(path);
            using var a = Quantized4BitTensor.QuantizeBFloat16(bf16, [1000], QuantType.Nf4);
            using var b = Quantized4BitTensor.Quantize(bf16AsFloat, [1000], QuantType.Nf4);
            Assert.Equal(DType.BF16, a.State.DType);
            Assert.Equal(b.Packed.Span.ToArray(), a.Packed.Span.ToArray());
            Assert.Equal(b.State.Absmax!, a.State.Absmax!);
            using var c = Quantized4BitTensor.Quantize(half, [1000], QuantType.Fp4);
            using var d = Quantized4BitTensor.Quantize(halfAsFloat, [1000], QuantType.Fp4);
            Assert.Equal(d.Packed.Span.ToArray(), c.Packed.Span.ToArray());
        }
    }

    [Theory]
    [InlineData(37, 51, false)]
    [InlineData(16, 64, true)]
    [InlineData(5, 129, true)]
    public void PanelDequantizeEqualsTheFullMatrixOnSubRectangles(int rows, int columns, bool doubleQuant)
    {
        var values = Gaussian.Sample(rows * columns, rows);
        using var q = Quantized4BitTensor.Quantize(values, [rows, columns], QuantType.Nf4, 64, doubleQuant);
        var full = new float[rows * columns];
        q.Dequantize(full);
        (int r0, int rc, int c0, int cc)[] panels = [(0, rows, 0, columns), (1, rows - 2, 3, columns - 5), (rows - 1, 1, columns - 1, 1), (2, 3, 1, 33)];
        foreach (var path in new[] { SimdPath.Scalar, SimdPath.Vector256, SimdPath.Vector512 })
        {
            using var _ = Simd.Force(path);
            foreach (var (r0, rc, c0, cc) in panels)
            {
                int ld = cc + 3;
                var panel = new float[rc * ld];
                fixed (float* p = panel) q.DequantizeRows(r0, rc, c0, cc, p, ld);
                for (int i = 0; i < rc; i++)
                for (int j = 0; j < ld; j++)
                    Assert.Equal(j < cc ? full[(r0 + i) * columns + c0 + j] : 0f, panel[i * ld + j]);
            }
        }
    }

    [Fact]
    public void InvalidBlockSizeNamesTheAllowedValues()
    {
        var ex = Assert.Throws<PeftSharpException>(() => Quantized4BitTensor.Quantize(new float[8], [8], QuantType.Nf4, 48));
        Assert.Contains("blocksize", ex.Message);
        Assert.Contains("32, 64, 128", ex.Message);
    }
}
