using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using PeftSharp.Formats;
using PeftSharp.Tensors;
using PeftSharp.Kernels;

namespace PeftSharp.Quantization;

/// <summary>One tensor as a checkpoint file holds it: name, element type, shape and little-endian bytes.</summary>
public sealed record NamedTensorBytes(string Name, DType DType, long[] Shape, byte[] Data);

/// <summary>
/// bitsandbytes' state-dict layout for a 4-bit weight (<c>Linear4bit._save_to_state_dict</c> with
/// <c>QuantState.as_dict(packed=True)</c>), as Hugging Face checkpoints store it. For a weight named W:
/// <list type="bullet">
/// <item><c>W</c>: U8 [(n + 1) / 2, 1], the packed codes (another storage dtype reinterprets the same bytes)</item>
/// <item><c>W.absmax</c>: F32 [blocks], or U8 [blocks] when double-quantized</item>
/// <item><c>W.quant_map</c>: F32 [16]</item>
/// <item><c>W.nested_absmax</c>: F32 [nested blocks] and <c>W.nested_quant_map</c>: F32 [256], when double-quantized</item>
/// <item><c>W.quant_state.bitsandbytes__nf4</c> (or <c>__fp4</c>): U8, the UTF-8 bytes of Python's
/// <c>json.dumps</c> of {quant_type, blocksize, dtype, shape[, nested_blocksize, nested_dtype, nested_offset]}</item>
/// </list>
/// </summary>
public static class BnbSerialization
{
    private const string QuantStatePrefix = ".quant_state.bitsandbytes__";

    public static IReadOnlyList<NamedTensorBytes> ToNamedTensors(Quantized4BitTensor tensor, string weightName, DType storage = DType.U8)
    {
        var state = tensor.State;
        long packedBytes = tensor.Packed.Length;
        int storageSize = storage.Size();
        if (packedBytes % storageSize != 0)
            throw new PeftSharpException($"{weightName}: {packedBytes} packed bytes do not fill whole {storage} storage elements.");
        var list = new List<NamedTensorBytes>
        {
            new(weightName, storage, [packedBytes / storageSize, 1], tensor.Packed.Span.ToArray()),
        };
        if (state.IsNested)
        {
            list.Add(new(weightName + ".absmax", DType.U8, [state.BlockCount], (byte[])state.QuantizedAbsmax!.Clone()));
            list.Add(new(weightName + ".quant_map", DType.F32, [16], Bytes(FourBitCodes.QuantMap(state.QuantType))));
            list.Add(new(weightName + ".nested_absmax", DType.F32, [state.Nested!.Absmax.LongLength], Bytes(state.Nested.Absmax)));
            list.Add(new(weightName + ".nested_quant_map", DType.F32, [256], Bytes(state.Nested.Code)));
        }
        else
        {
            list.Add(new(weightName + ".absmax", DType.F32, [state.BlockCount], Bytes(state.Absmax!)));
            list.Add(new(weightName + ".quant_map", DType.F32, [16], Bytes(FourBitCodes.QuantMap(state.QuantType))));
        }
        var json = Encoding.UTF8.GetBytes(QuantStateJson(state));
        list.Add(new(weightName + QuantStatePrefix + state.QuantType.BnbName(), DType.U8, [json.Length], json));
        return list;
    }

    /// <summary>The non-tensor items exactly as <c>pack_dict_to_tensor</c> writes them (<c>json.dumps</c>, insertion order).</summary>
    public static string QuantStateJson(QuantState state)
    {
        var sb = new StringBuilder();
        sb.Append("{\"quant_type\": \"").Append(state.QuantType.BnbName()).Append('"');
        sb.Append(", \"blocksize\": ").Append(state.BlockSize.ToString(CultureInfo.InvariantCulture));
        sb.Append(", \"dtype\": \"").Append(TorchName(state.DType)).Append('"');
        sb.Append(", \"shape\": [").Append(string.Join(", ", state.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture)))).Append(']');
        if (state.IsNested)
        {
            sb.Append(", \"nested_blocksize\": ").Append(state.Nested!.BlockSize.ToString(CultureInfo.InvariantCulture));
            sb.Append(", \"nested_dtype\": \"float32\"");
            sb.Append(", \"nested_offset\": ").Append(PythonJson.FormatFloat(state.Offset));
        }
        return sb.Append('}').ToString();
    }

    /// <summary>Restores the 4-bit weight <paramref name="weightName"/> from the tensors bitsandbytes saved beside it.</summary>
    /// <param name="ownsData">The tensors' arrays were copied for this call alone: the 8-bit absmax codes are kept rather than
    /// cloned (a 65B model's are 0.94 GiB, which a second copy would leave as garbage on the managed heap).</param>
    public static Quantized4BitTensor FromNamedTensors(string weightName, IReadOnlyDictionary<string, NamedTensorBytes> tensors,
        Func<long, NativeBuffer<byte>>? packedView = null, bool ownsData = false)
    {
        NamedTensorBytes Get(string name) => tensors.TryGetValue(name, out var t)
            ? t : throw new PeftSharpException($"{name}: missing; a bitsandbytes 4-bit weight {weightName} needs it.");

        var stateKeys = tensors.Keys.Where(k => k.StartsWith(weightName + QuantStatePrefix, StringComparison.Ordinal)).ToList();
        if (stateKeys.Count != 1)
            throw new PeftSharpException($"{weightName}: expected exactly one {weightName}{QuantStatePrefix}nf4 or __fp4 entry, found {stateKeys.Count}.");
        var stateTensor = tensors[stateKeys[0]];
        var suffixType = QuantTypeNames.Parse(stateKeys[0][(weightName.Length + QuantStatePrefix.Length)..], stateKeys[0]);

        JsonElement root;
        try { root = JsonInput.ParseDocument(System.Text.Encoding.UTF8.GetString(stateTensor.Data), stateTensor.Name).RootElement; }
        catch (PeftSharpException e) { throw new PeftSharpException($"not a JSON quant state: {e.Message}", e); }
        var quantType = QuantTypeNames.Parse(String(root, "quant_type", stateTensor.Name), stateTensor.Name + " quant_type");
        if (quantType != suffixType)
            throw new PeftSharpException($"{stateTensor.Name}: quant_type \"{quantType.BnbName()}\" disagrees with the entry name.");
        int blockSize = Int(root, "blocksize", stateTensor.Name);
        QuantState.ValidateBlockSize(blockSize, stateTensor.Name + " blocksize");
        var dtype = ParseTorchName(String(root, "dtype", stateTensor.Name), stateTensor.Name + " dtype");
        if (!root.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new PeftSharpException($"{stateTensor.Name}: \"shape\" must be a list of integers.");
        var shape = shapeElement.EnumerateArray().Select(d => d.GetInt64()).ToArray();

        var absmaxTensor = Get(weightName + ".absmax");
        QuantState state;
        if (root.TryGetProperty("nested_offset", out var offsetElement))
        {
            Expect(absmaxTensor, DType.U8);
            var nestedAbsmax = Get(weightName + ".nested_absmax");
            var nestedMap = Get(weightName + ".nested_quant_map");
            Expect(nestedAbsmax, DType.F32);
            Expect(nestedMap, DType.F32);
            string? nestedDtype = String(root, "nested_dtype", stateTensor.Name);
            if (nestedDtype != "float32")
                throw new PeftSharpException($"{stateTensor.Name}: nested_dtype must be \"float32\", got \"{nestedDtype}\".");
            var nested = new NestedQuantState(Floats(nestedAbsmax), Int(root, "nested_blocksize", stateTensor.Name), Floats(nestedMap));
            state = new QuantState(quantType, blockSize, shape, dtype, ownsData ? absmaxTensor.Data : (byte[])absmaxTensor.Data.Clone(), (float)offsetElement.GetDouble(), nested);
        }
        else
        {
            Expect(absmaxTensor, DType.F32);
            state = new QuantState(quantType, blockSize, shape, dtype, Floats(absmaxTensor));
        }
        var map = Get(weightName + ".quant_map");
        Expect(map, DType.F32);
        if (map.Data.Length != 16 * sizeof(float))
            throw new PeftSharpException($"{map.Name}: expected 16 float32 values, got {map.Data.Length / 4}.");

        var weight = Get(weightName);
        long expected = (state.ElementCount + 1) / 2;
        // The packed codes are copied out of the entry, or (packedView) left where they are, e.g. in a memory-mapped file.
        if (packedView != null) return new Quantized4BitTensor(packedView(expected), state);
        if (weight.Data.LongLength < expected)
            throw new PeftSharpException($"{weightName}: expected {expected} packed bytes for shape [{string.Join(", ", shape)}], got {weight.Data.LongLength}.");
        var packed = new NativeBuffer<byte>(expected, clear: false);
        weight.Data.AsSpan(0, (int)expected).CopyTo(packed.Span);
        return new Quantized4BitTensor(packed, state);
    }

    /// <summary>torch's name of a dtype, as <c>str(dtype).strip("torch.")</c> gives it.</summary>
    public static string TorchName(DType dtype) => dtype switch
    {
        DType.F32 => "float32",
        DType.F16 => "float16",
        DType.BF16 => "bfloat16",
        DType.F64 => "float64",
        DType.U8 => "uint8",
        DType.I8 => "int8",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "No torch name for this dtype here."),
    };

    public static DType ParseTorchName(string? name, string key) => name switch
    {
        "float32" => DType.F32,
        "float16" => DType.F16,
        "bfloat16" => DType.BF16,
        _ => throw new PeftSharpException($"{key}: expected \"float32\", \"float16\" or \"bfloat16\", got \"{name}\"."),
    };

    private static void Expect(NamedTensorBytes tensor, DType dtype)
    {
        if (tensor.DType != dtype)
            throw new PeftSharpException($"{tensor.Name}: expected {dtype.SafetensorsName()}, got {tensor.DType.SafetensorsName()}.");
    }

    private static string? String(JsonElement root, string key, string name) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString() : throw new PeftSharpException($"{name}: \"{key}\" must be a string.");

    private static int Int(JsonElement root, string key, string name) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)
            ? i : throw new PeftSharpException($"{name}: \"{key}\" must be an integer.");

    private static byte[] Bytes(float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static float[] Floats(NamedTensorBytes tensor) => MemoryMarshal.Cast<byte, float>(tensor.Data).ToArray();
}
