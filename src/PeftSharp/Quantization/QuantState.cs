using PeftSharp.Tensors;
using PeftSharp.Kernels;

namespace PeftSharp.Quantization;

/// <summary>
/// What bitsandbytes needs besides the packed codes to restore a 4-bit tensor (its <c>QuantState</c>): the
/// data type, block size, original shape and dtype, and the per-block absmax: either float32
/// (<see cref="Absmax"/>) or, with double quantization, 8-bit codes (<see cref="QuantizedAbsmax"/>) of
/// absmax − <see cref="Offset"/> in the dynamic map, with a float32 absmax per <see cref="Nested"/> block.
/// </summary>
public sealed class QuantState
{
    public static readonly int[] AllowedBlockSizes = [32, 64, 128, 256, 512, 1024, 2048, 4096];

    private QuantState(QuantType quantType, int blockSize, long[] shape, DType dtype)
    {
        ValidateBlockSize(blockSize, "blocksize");
        if (dtype is not (DType.F32 or DType.F16 or DType.BF16))
            throw new PeftSharpException($"dtype: 4-bit quantization stores float32, float16 or bfloat16 tensors, not {dtype}.");
        QuantType = quantType;
        BlockSize = blockSize;
        Shape = (long[])shape.Clone();
        DType = dtype;
        ElementCount = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new PeftSharpException($"shape: dimension {d} is negative.");
            ElementCount *= d;
        }
        BlockCount = (ElementCount + blockSize - 1) / blockSize;
    }

    /// <summary>A state with float32 absmax (no double quantization).</summary>
    public QuantState(QuantType quantType, int blockSize, long[] shape, DType dtype, float[] absmax)
        : this(quantType, blockSize, shape, dtype)
    {
        if (absmax.LongLength != BlockCount)
            throw new PeftSharpException($"absmax: expected {BlockCount} values for {ElementCount} elements in blocks of {blockSize}, got {absmax.LongLength}.");
        Absmax = absmax;
    }

    /// <summary>A double-quantized state: absmax[b] = nested.Code[quantizedAbsmax[b]] · nested.Absmax[b / nested.BlockSize] + offset.</summary>
    public QuantState(QuantType quantType, int blockSize, long[] shape, DType dtype, byte[] quantizedAbsmax, float offset, NestedQuantState nested)
        : this(quantType, blockSize, shape, dtype)
    {
        if (quantizedAbsmax.LongLength != BlockCount)
            throw new PeftSharpException($"absmax: expected {BlockCount} 8-bit codes for {ElementCount} elements in blocks of {blockSize}, got {quantizedAbsmax.LongLength}.");
        long nestedBlocks = (BlockCount + nested.BlockSize - 1) / nested.BlockSize;
        if (nested.Absmax.LongLength != nestedBlocks)
            throw new PeftSharpException($"nested_absmax: expected {nestedBlocks} values for {BlockCount} absmax codes in blocks of {nested.BlockSize}, got {nested.Absmax.LongLength}.");
        QuantizedAbsmax = quantizedAbsmax;
        Offset = offset;
        Nested = nested;
    }

    public QuantType QuantType { get; }
    public int BlockSize { get; }
    public long[] Shape { get; }
    /// <summary>The dtype of the tensor before quantization (bitsandbytes' <c>dtype</c>), which dequantization restores.</summary>
    public DType DType { get; }
    public long ElementCount { get; }
    public long BlockCount { get; }

    /// <summary>Per-block float32 absmax; null when double-quantized.</summary>
    public float[]? Absmax { get; }
    /// <summary>Per-block 8-bit absmax codes when double-quantized, else null.</summary>
    public byte[]? QuantizedAbsmax { get; }
    /// <summary>The mean absmax subtracted before the 8-bit quantization (bitsandbytes' <c>offset</c> / <c>nested_offset</c>).</summary>
    public float Offset { get; }
    public NestedQuantState? Nested { get; }
    public bool IsNested => Nested is not null;

    /// <summary>The dequantization table of <see cref="QuantType"/>.</summary>
    public ReadOnlySpan<float> Code => FourBitCodes.Table(QuantType);

    /// <summary>The absmax of block <paramref name="block"/>, restored from the nested state as bitsandbytes does (float32 multiply, then add).</summary>
    public float GetAbsmax(long block)
    {
        if (Absmax is not null) return Absmax[block];
        float value = Nested!.Code[QuantizedAbsmax![block]] * Nested.Absmax[block / Nested.BlockSize];
        return value + Offset;
    }

    /// <summary>All block absmax values in float32.</summary>
    public float[] DequantizeAbsmax()
    {
        if (Absmax is not null) return (float[])Absmax.Clone();
        var result = new float[BlockCount];
        for (long b = 0; b < BlockCount; b++) result[b] = GetAbsmax(b);
        return result;
    }

    /// <summary>Bytes of absmax storage: 4 per block, or with double quantization 1 per block + 4 per nested block + 4 for the offset.</summary>
    public long AbsmaxStorageBytes => Absmax is not null
        ? Absmax.LongLength * sizeof(float)
        : QuantizedAbsmax!.LongLength + Nested!.Absmax.LongLength * sizeof(float) + sizeof(float);

    internal static void ValidateBlockSize(int blockSize, string key)
    {
        if (Array.IndexOf(AllowedBlockSizes, blockSize) < 0)
            throw new PeftSharpException($"{key}: 4-bit block size must be one of {string.Join(", ", AllowedBlockSizes)}, got {blockSize}.");
    }
}

/// <summary>The second-level state of double quantization: float32 absmax per block of 8-bit absmax codes, and the 8-bit map.</summary>
public sealed class NestedQuantState
{
    public const int DefaultBlockSize = 256;

    public NestedQuantState(float[] absmax, int blockSize, float[] code)
    {
        if (blockSize <= 0) throw new PeftSharpException($"nested_blocksize: must be positive, got {blockSize}.");
        if (code.Length != 256) throw new PeftSharpException($"nested_quant_map: expected 256 values, got {code.Length}.");
        Absmax = absmax;
        BlockSize = blockSize;
        Code = code;
    }

    public float[] Absmax { get; }
    public int BlockSize { get; }
    /// <summary>The 8-bit map (<c>nested_quant_map</c>), normally <see cref="DynamicMap.Signed"/>.</summary>
    public float[] Code { get; }
}
