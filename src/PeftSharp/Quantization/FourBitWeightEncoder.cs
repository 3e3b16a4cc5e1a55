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

    public FourBitWeightEncoder(BitsAndBytesConfig config)
    {
        if (!config.LoadIn4bit) throw new PeftSharpException("quantization_config: load_in_4bit must be true to write a 4-bit checkpoint.");
        config.Validate();
        _config = config;
    }

    public bool Encodes(LinearModuleInfo linear) => !_config.Skips(linear);

    public void DescribeIn(JsonObject config) => config["quantization_config"] = _config.ToJson();

    public IEnumerable<SafetensorsEntry> Entries(string weightName, LinearModuleInfo linear, DType dtype, long count, Action<nint> fillValues,
        string? spillDirectory) =>
        QuantizedCheckpoint.QuantizedEntries(weightName, _config, () =>
        {
            using var bytes = new NativeBuffer<byte>(count * dtype.Size(), clear: false);
            fillValues((nint)bytes.Pointer);
            return QuantizedCheckpoint.QuantizeStored(bytes.Pointer, dtype, linear, _config);
        }, spillDirectory);
}
