using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Quantization;

/// <summary>
/// A tensor stored the way bitsandbytes' <c>Params4bit</c> stores it: the flattened elements in blocks of
/// <see cref="QuantState.BlockSize"/>, each block scaled by its absmax and rounded to the nearest NF4/FP4
/// code, two codes a byte with the first element in the high nibble ((n + 1) / 2 bytes), plus the
/// <see cref="QuantState"/>. A weight W (out × in, row-major) is dequantized whole, or a panel at a time with
/// <see cref="DequantizeRows"/> so a GEMM never materialises W.
/// </summary>
public sealed unsafe class Quantized4BitTensor : IDisposable
{
    public Quantized4BitTensor(NativeBuffer<byte> packed, QuantState state)
    {
        long expected = (state.ElementCount + 1) / 2;
        if (packed.Length != expected)
            throw new PeftSharpException($"weight: expected {expected} packed bytes for {state.ElementCount} 4-bit values, got {packed.Length}.");
        Packed = packed;
        State = state;
    }

    /// <summary>The packed codes: byte k holds element 2k (high nibble) and 2k + 1 (low nibble).</summary>
    public NativeBuffer<byte> Packed { get; }
    public QuantState State { get; }
    public long ElementCount => State.ElementCount;

    /// <summary>Rows of the tensor seen as a matrix: the first dimension (1 for a scalar).</summary>
    public long Rows => State.Shape.Length == 0 ? 1 : State.Shape[0];
    /// <summary>Columns of the tensor seen as a matrix: the product of the remaining dimensions.</summary>
    public long Columns => Rows == 0 ? 0 : ElementCount / Rows;

    /// <summary>Packed bytes plus absmax storage (codes tables excluded: they are shared constants).</summary>
    public long StorageBytes => Packed.Length + State.AbsmaxStorageBytes;

    /// <summary>Storage bits per element: about 4.5 with float32 absmax in blocks of 64, 4.127 with double quantization.</summary>
    public double BitsPerParameter => ElementCount == 0 ? 0 : StorageBytes * 8.0 / ElementCount;

    public static Quantized4BitTensor Quantize(ReadOnlySpan<float> values, long[] shape, QuantType quantType,
        int blockSize = 64, bool doubleQuant = false)
    {
        fixed (float* source = values)
            return Quantize(source, DType.F32, values.Length, shape, quantType, blockSize, doubleQuant);
    }

    /// <summary>Quantizes bfloat16 values given as their raw 16-bit patterns.</summary>
    public static Quantized4BitTensor QuantizeBFloat16(ReadOnlySpan<ushort> bits, long[] shape, QuantType quantType,
        int blockSize = 64, bool doubleQuant = false)
    {
        fixed (ushort* source = bits)
            return Quantize(source, DType.BF16, bits.Length, shape, quantType, blockSize, doubleQuant);
    }

    public static Quantized4BitTensor Quantize(ReadOnlySpan<Half> values, long[] shape, QuantType quantType,
        int blockSize = 64, bool doubleQuant = false)
    {
        fixed (Half* source = values)
            return Quantize(source, DType.F16, values.Length, shape, quantType, blockSize, doubleQuant);
    }

    /// <summary>
    /// Quantizes <paramref name="count"/> elements of type <paramref name="dtype"/> (F32, F16 or BF16) at
    /// <paramref name="source"/>, as <c>bnb.functional.quantize_4bit(A, blocksize, compress_statistics, quant_type)</c>.
    /// </summary>
    public static Quantized4BitTensor Quantize(void* source, DType dtype, long count, long[] shape, QuantType quantType,
        int blockSize = 64, bool doubleQuant = false)
    {
        QuantState.ValidateBlockSize(blockSize, "blocksize");
        long shapeCount = 1;
        foreach (long d in shape) shapeCount *= d;
        if (shapeCount != count)
            throw new ArgumentException($"Shape [{string.Join(", ", shape)}] holds {shapeCount} elements, but {count} were given.");

        long blocks = (count + blockSize - 1) / blockSize;
        var absmax = new float[blocks];
        var packed = new NativeBuffer<byte>((count + 1) / 2, clear: false);
        float* scratch = stackalloc float[blockSize];
        int elementSize = dtype.Size();
        for (long b = 0; b < blocks; b++)
        {
            long start = b * blockSize;
            int length = (int)Math.Min(blockSize, count - start);
            float* x;
            if (dtype == DType.F32) x = (float*)source + start;
            else
            {
                FourBitKernels.ToSingle(dtype, (byte*)source + start * elementSize, length, scratch);
                x = scratch;
            }
            float max = FourBitKernels.AbsMax(x, length);
            absmax[b] = max;
            FourBitKernels.QuantizeBlock(quantType, x, length, 1f / MathF.Max(max, 1e-38f), packed.Pointer + start / 2);
        }

        QuantState state = doubleQuant ? CompressAbsmax(quantType, blockSize, shape, dtype, absmax) : new QuantState(quantType, blockSize, shape, dtype, absmax);
        return new Quantized4BitTensor(packed, state);
    }

    /// <summary>
    /// A tensor from its packed codes and its blocks' absmax, as <see cref="Quantize(void*, DType, long, long[], QuantType, int, bool)"/>
    /// would have stored them (double quantization compresses the absmax the same way). Takes ownership of <paramref name="packed"/>.
    /// </summary>
    public static Quantized4BitTensor FromCodes(NativeBuffer<byte> packed, float[] absmax, long[] shape, QuantType quantType, DType dtype,
        int blockSize = 64, bool doubleQuant = false)
    {
        QuantState state = doubleQuant ? CompressAbsmax(quantType, blockSize, shape, dtype, absmax) : new QuantState(quantType, blockSize, shape, dtype, absmax);
        return new Quantized4BitTensor(packed, state);
    }

    /// <summary>Double quantization: offset = mean(absmax); absmax − offset quantized to 8 bits in blocks of 256.</summary>
    private static QuantState CompressAbsmax(QuantType quantType, int blockSize, long[] shape, DType dtype, float[] absmax)
    {
        double sum = 0;
        foreach (float a in absmax) sum += a;
        float offset = absmax.Length == 0 ? 0f : (float)(sum / absmax.Length);
        var centered = new float[absmax.Length];
        for (int i = 0; i < centered.Length; i++) centered[i] = absmax[i] - offset;
        int nestedBlockSize = NestedQuantState.DefaultBlockSize;
        var codes = new byte[absmax.Length];
        var nestedAbsmax = new float[(absmax.Length + nestedBlockSize - 1) / nestedBlockSize];
        var map = DynamicMap.Signed.ToArray();
        DynamicMap.QuantizeBlockwise(centered, nestedBlockSize, map, codes, nestedAbsmax);
        return new QuantState(quantType, blockSize, shape, dtype, codes, offset, new NestedQuantState(nestedAbsmax, nestedBlockSize, map));
    }

    /// <summary>Dequantizes the whole tensor into <paramref name="destination"/> (ElementCount floats).</summary>
    public void Dequantize(Span<float> destination, bool roundToBFloat16 = false)
    {
        if (destination.Length < ElementCount)
            throw new ArgumentException($"Destination holds {destination.Length} floats; {ElementCount} are needed.");
        fixed (float* d = destination) DequantizeRange(0, (int)ElementCount, d, roundToBFloat16);
    }

    /// <summary>Dequantizes the whole tensor into a new buffer.</summary>
    public NativeBuffer<float> Dequantize(bool roundToBFloat16 = false)
    {
        var result = new NativeBuffer<float>(ElementCount, clear: false);
        const int chunk = 1 << 28;
        for (long start = 0; start < ElementCount; start += chunk)
            DequantizeRange(start, (int)Math.Min(chunk, ElementCount - start), result.Pointer + start, roundToBFloat16);
        return result;
    }

    /// <summary>
    /// Dequantizes the flat elements [start, start + count) into <paramref name="destination"/>, handling a
    /// start in the middle of a byte or a block. With <paramref name="roundToBFloat16"/> every value is rounded
    /// to bfloat16 (what bitsandbytes returns for a bfloat16 dtype) and stored as float32.
    /// </summary>
    public void DequantizeRange(long start, int count, float* destination, bool roundToBFloat16 = false)
    {
        if (start < 0 || count < 0 || start + count > ElementCount)
            throw new ArgumentOutOfRangeException(nameof(start), $"Range [{start}, {start + count}) is outside a tensor of {ElementCount} elements.");
        using var pin = Pin();
        pin.View.Dequantize(start, count, destination, roundToBFloat16);
    }

    /// <summary>
    /// Dequantizes the panel rows [rowStart, rowStart + rowCount) × columns [colStart, colStart + colCount)
    /// of the tensor seen as a <see cref="Rows"/> × <see cref="Columns"/> row-major matrix into
    /// <paramref name="destination"/>, row i of the panel at destination + i · <paramref name="leadingDimension"/>.
    /// </summary>
    public void DequantizeRows(long rowStart, int rowCount, long colStart, int colCount, float* destination, long leadingDimension, bool roundToBFloat16 = false)
    {
        if (rowStart < 0 || rowCount < 0 || rowStart + rowCount > Rows || colStart < 0 || colCount < 0 || colStart + colCount > Columns)
            throw new ArgumentOutOfRangeException(nameof(rowStart),
                $"Panel rows [{rowStart}, {rowStart + rowCount}) × columns [{colStart}, {colStart + colCount}) is outside a {Rows} × {Columns} matrix.");
        if (leadingDimension < colCount)
            throw new ArgumentOutOfRangeException(nameof(leadingDimension), $"Leading dimension {leadingDimension} is smaller than the panel width {colCount}.");
        long columns = Columns;
        using var pin = Pin();
        var view = pin.View;
        for (int i = 0; i < rowCount; i++)
            view.Dequantize((rowStart + i) * columns + colStart, colCount, destination + i * leadingDimension, roundToBFloat16);
    }

    /// <summary>Pins the state for an unmanaged <see cref="FourBitView"/> (kernels); dispose when done.</summary>
    internal FourBitPin Pin() => new(this);

    /// <summary>The tensors bitsandbytes saves for this weight (see <see cref="BnbSerialization"/>).</summary>
    public IReadOnlyList<NamedTensorBytes> ToNamedTensors(string weightName, DType storage = DType.U8) =>
        BnbSerialization.ToNamedTensors(this, weightName, storage);

    public static Quantized4BitTensor FromNamedTensors(string weightName, IReadOnlyDictionary<string, NamedTensorBytes> tensors) =>
        BnbSerialization.FromNamedTensors(weightName, tensors);

    public void Dispose() => Packed.Dispose();
}
