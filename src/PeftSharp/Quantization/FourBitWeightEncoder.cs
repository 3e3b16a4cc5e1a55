using System.Text.Json.Nodes;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Tensors;

namespace PeftSharp.Quantization;

/// <summary>
/// init-model --quantize: the linears that <c>quantization_config</c> does not skip are written in bitsandbytes' 4-bit
/// serialization straight from their random values, one linear at a time, and config.json gets the quantization_config:
/// the same bytes as writing the dense checkpoint and then `peftsharp quantize` with this config.
/// </summary>
public sealed unsafe class FourBitWeightEncoder : ILinearWeightEncoder
{
    private readonly BitsAndBytesConfig _config;
    private readonly ulong? _randomCodesSeed;

    /// <param name="randomCodesSeed">
    /// When given, the codes and block scales are drawn directly instead of quantizing the normal draws (init-model
    /// --random-codes): uniform 4-bit codes, and each block's absmax that of 64 draws of N(0, 0.02) would be about
    /// (0.02 × U(2.2, 3.2)). A checkpoint of a 65B shape then costs what writing it costs (drawing and quantizing 65·10⁹
    /// normals takes the better part of an hour on two cores), for memory and speed measurements; the weights are not those
    /// of the dense checkpoint. Each weight's draws come from the seed and its name alone.
    /// </param>
    public FourBitWeightEncoder(BitsAndBytesConfig config, ulong? randomCodesSeed = null)
    {
        if (!config.LoadIn4bit) throw new PeftSharpException("quantization_config: load_in_4bit must be true to write a 4-bit checkpoint.");
        config.Validate();
        _config = config;
        _randomCodesSeed = randomCodesSeed;
    }

    public bool Encodes(LinearModuleInfo linear) => !_config.Skips(linear);

    public void DescribeIn(JsonObject config) => config["quantization_config"] = _config.ToJson();

    public IEnumerable<SafetensorsEntry> Entries(string weightName, LinearModuleInfo linear, DType dtype, long count, Action<nint> fillValues,
        string? spillDirectory) => _randomCodesSeed is ulong seed
        // Drawing the codes again costs less than keeping them on disk between the passes.
        ? QuantizedCheckpoint.QuantizedEntries(weightName, _config, () => RandomCodes(seed, weightName, linear, dtype))
        : QuantizedCheckpoint.QuantizedEntries(weightName, _config, () =>
        {
            using var bytes = new NativeBuffer<byte>(count * dtype.Size(), clear: false);
            fillValues((nint)bytes.Pointer);
            return QuantizedCheckpoint.QuantizeStored(bytes.Pointer, dtype, linear, _config);
        }, spillDirectory);

    private Quantized4BitTensor RandomCodes(ulong seed, string weightName, LinearModuleInfo linear, DType dtype)
    {
        var rng = new Rng(Rng.FoldIn(seed, Rng.StreamId(weightName)));
        long count = (long)linear.OutFeatures * linear.InFeatures;
        var packed = new NativeBuffer<byte>((count + 1) / 2, clear: false);
        try
        {
            var words = (ulong*)packed.Pointer;
            long whole = packed.Length / sizeof(ulong);
            for (long i = 0; i < whole; i++) words[i] = rng.NextUInt64();
            for (long i = whole * sizeof(ulong); i < packed.Length; i++) packed.Pointer[i] = (byte)rng.NextUInt64();
            int blockSize = _config.Bnb4bitBlockSize;
            var absmax = new float[(count + blockSize - 1) / blockSize];
            for (long b = 0; b < absmax.LongLength; b++) absmax[b] = ModelInitializer.InitializerRange * (2.2f + rng.NextFloat());
            return Quantized4BitTensor.FromCodes(packed, absmax, [linear.OutFeatures, linear.InFeatures], _config.QuantType, dtype, blockSize,
                _config.Bnb4bitUseDoubleQuant);
        }
        catch
        {
            packed.Dispose();
            throw;
        }
    }
}
