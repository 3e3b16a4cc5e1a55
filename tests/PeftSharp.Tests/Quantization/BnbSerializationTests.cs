using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Formats;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using PeftSharp.Kernels;

namespace PeftSharp.Tests.Quantization;

public class BnbSerializationTests
{
    [Fact]
    public void PlainStateWritesBitsandbytesNamesShapesAndJson()
    {
        var values = Gaussian.Sample(6 * 33, 1);
        using var q = Quantized4BitTensor.Quantize(values, [6, 33], QuantType.Nf4);
        var tensors = q.ToNamedTensors("model.layers.0.mlp.down_proj.weight");
        Assert.Equal(
            ["model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.down_proj.weight.absmax", "model.layers.0.mlp.down_proj.weight.quant_map",
             "model.layers.0.mlp.down_proj.weight.quant_state.bitsandbytes__nf4"],
            tensors.Select(t => t.Name));
        Assert.Equal(DType.U8, tensors[0].DType);
        Assert.Equal([99L, 1L], tensors[0].Shape);
        Assert.Equal(DType.F32, tensors[1].DType);
        Assert.Equal([4L], tensors[1].Shape);
        Assert.Equal([16L], tensors[2].Shape);
        Assert.Equal("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [6, 33]}", Encoding.UTF8.GetString(tensors[3].Data));
    }

    [Fact]
    public void NestedStateJsonCarriesTheOffsetAsPythonRepr()
    {
        var values = Gaussian.Sample(64 * 300, 2);
        var bf16 = values.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)).ToArray();
        using var q = Quantized4BitTensor.QuantizeBFloat16(bf16, [300, 64], QuantType.Fp4, 64, doubleQuant: true);
        var tensors = q.ToNamedTensors("w");
        Assert.Equal(["w", "w.absmax", "w.quant_map", "w.nested_absmax", "w.nested_quant_map", "w.quant_state.bitsandbytes__fp4"], tensors.Select(t => t.Name));
        Assert.Equal(DType.U8, tensors[1].DType);
        Assert.Equal([300L], tensors[1].Shape);
        Assert.Equal([2L], tensors[3].Shape);
        Assert.Equal([256L], tensors[4].Shape);
        string json = Encoding.UTF8.GetString(tensors[5].Data);
        Assert.Equal("{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [300, 64], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": "
            + PythonJson.FormatFloat(q.State.Offset) + "}", json);
        Assert.Equal(q.State.Offset, (float)double.Parse(json[(json.LastIndexOf(':') + 2)..^1], System.Globalization.CultureInfo.InvariantCulture));
    }

    // Loading a checkpoint copies each weight's entries once (ReadLinear) and hands them over: the 8-bit absmax codes are
    // kept, not cloned into a second array (at 65B, 0.94 GiB of garbage on the managed heap, resident after loading).
    [Fact]
    public void OwnedAbsmaxCodesAreKeptAndSharedOnesCloned()
    {
        var values = Gaussian.Sample(64 * 600, 3);
        using var q = Quantized4BitTensor.Quantize(values, [64 * 600], QuantType.Nf4, 64, doubleQuant: true);
        var tensors = q.ToNamedTensors("w").ToDictionary(t => t.Name);
        byte[] codes = tensors["w.absmax"].Data;
        using (var owned = BnbSerialization.FromNamedTensors("w", tensors, ownsData: true)) Assert.Same(codes, owned.State.QuantizedAbsmax);
        using var cloned = BnbSerialization.FromNamedTensors("w", tensors);
        Assert.NotSame(codes, cloned.State.QuantizedAbsmax);
        Assert.Equal(codes, cloned.State.QuantizedAbsmax);
    }

    [Theory]
    [InlineData(QuantType.Nf4, false, 4099)]
    [InlineData(QuantType.Fp4, true, 64 * 600 + 1)]
    public void RoundTripThroughNamedTensorsIsByteIdentical(QuantType type, bool doubleQuant, int count)
    {
        var values = Gaussian.Sample(count, count);
        using var q = Quantized4BitTensor.Quantize(values, [count], type, 128, doubleQuant);
        var tensors = q.ToNamedTensors("lm.weight");
        using var back = Quantized4BitTensor.FromNamedTensors("lm.weight", tensors.ToDictionary(t => t.Name));
        Assert.Equal(q.Packed.Span.ToArray(), back.Packed.Span.ToArray());
        Assert.Equal(q.State.QuantType, back.State.QuantType);
        Assert.Equal(q.State.BlockSize, back.State.BlockSize);
        Assert.Equal(q.State.Shape, back.State.Shape);
        Assert.Equal(q.State.Offset, back.State.Offset);
        var again = back.ToNamedTensors("lm.weight");
        Assert.Equal(tensors.Count, again.Count);
        for (int i = 0; i < tensors.Count; i++)
        {
            Assert.Equal(tensors[i].Name, again[i].Name);
            Assert.Equal(tensors[i].DType, again[i].DType);
            Assert.Equal(tensors[i].Shape, again[i].Shape);
            Assert.Equal(tensors[i].Data, again[i].Data);
        }
        var a = new float[count];
        var b = new float[count];
        q.Dequantize(a);
        back.Dequantize(b);
        Assert.Equal(a, b);
    }

    [Fact]
    public void MissingOrWrongEntriesAreNamed()
    {
        using var q = Quantized4BitTensor.Quantize(Gaussian.Sample(128, 3), [2, 64], QuantType.Nf4);
        var tensors = q.ToNamedTensors("w").ToDictionary(t => t.Name);
        tensors.Remove("w.absmax");
        var ex = Assert.Throws<PeftSharpException>(() => Quantized4BitTensor.FromNamedTensors("w", tensors));
        Assert.Contains("w.absmax", ex.Message);

        tensors = q.ToNamedTensors("w").ToDictionary(t => t.Name);
        tensors["w.quant_state.bitsandbytes__nf4"] = tensors["w.quant_state.bitsandbytes__nf4"] with
        {
            Data = Encoding.UTF8.GetBytes("{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"float32\", \"shape\": [2, 64]}"),
        };
        ex = Assert.Throws<PeftSharpException>(() => Quantized4BitTensor.FromNamedTensors("w", tensors));
        Assert.Contains("blocksize", ex.Message);
        Assert.Contains("4096", ex.Message);
    }

    [Fact]
    public void BitsAndBytesConfigWritesTransformersToDict()
    {
        var config = new BitsAndBytesConfig
        {
            LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitComputeDtype = "bfloat16",
        };
        string json = PythonJson.Serialize(config.ToJson());
        Assert.Equal("""
            {
              "_load_in_4bit": true,
              "_load_in_8bit": false,
              "bnb_4bit_compute_dtype": "bfloat16",
              "bnb_4bit_quant_storage": "uint8",
              "bnb_4bit_quant_type": "nf4",
              "bnb_4bit_use_double_quant": true,
              "llm_int8_enable_fp32_cpu_offload": false,
              "llm_int8_has_fp16_weight": false,
              "llm_int8_skip_modules": null,
              "llm_int8_threshold": 6.0,
              "load_in_4bit": true,
              "load_in_8bit": false,
              "quant_method": "bitsandbytes"
            }
            """, json);
        var back = BitsAndBytesConfig.FromJson(JsonNode.Parse(json)!.AsObject());
        Assert.Equal(QuantType.Nf4, back.QuantType);
        Assert.True(back.Bnb4bitUseDoubleQuant);
        Assert.Equal("bfloat16", back.Bnb4bitComputeDtype);
        Assert.Equal(json, PythonJson.Serialize(back.ToJson()));
    }

    [Fact]
    public void BitsAndBytesConfigDefaultsAndErrorsFollowTransformers()
    {
        var defaults = BitsAndBytesConfig.FromJson(new JsonObject { ["quant_method"] = "bitsandbytes" });
        Assert.Equal("fp4", defaults.Bnb4bitQuantType);
        Assert.Equal("float32", defaults.Bnb4bitComputeDtype);
        Assert.Equal("uint8", defaults.Bnb4bitQuantStorage);
        Assert.Equal(6.0, defaults.LlmInt8Threshold);
        Assert.False(defaults.LoadIn4bit);

        var ex = Assert.Throws<PeftSharpException>(() => BitsAndBytesConfig.FromJson(new JsonObject { ["bnb_4bit_quant_type"] = "int4" }));
        Assert.Contains("bnb_4bit_quant_type", ex.Message);
        Assert.Contains("nf4", ex.Message);
        ex = Assert.Throws<PeftSharpException>(() => BitsAndBytesConfig.FromJson(new JsonObject { ["bnb_4bit_quant_storage"] = "int4" }));
        Assert.Contains("bnb_4bit_quant_storage", ex.Message);
        Assert.Contains("bfloat16", ex.Message);
        ex = Assert.Throws<PeftSharpException>(() => BitsAndBytesConfig.FromJson(new JsonObject { ["load_in_4bit"] = true, ["load_in_8bit"] = true }));
        Assert.Contains("load_in_4bit", ex.Message);
        ex = Assert.Throws<PeftSharpException>(() => BitsAndBytesConfig.FromJson(new JsonObject { ["bnb_4bit_use_double_quant"] = "yes" }));
        Assert.Contains("bnb_4bit_use_double_quant", ex.Message);
    }
}
