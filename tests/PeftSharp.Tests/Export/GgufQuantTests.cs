using PeftSharp.Export;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Export;

/// <summary>
/// Q8_0 and Q4_0 exports: every quantized matrix is byte for byte what an independent implementation of llama.cpp's
/// block formats (ggml-quants.c's reference quantizers) makes of the f32 export's values, and llama.cpp runs the files
/// with logits close to the f32 file's.
/// </summary>
[Collection(TrainedModels.Collection)]
public sealed class GgufQuantTests(TrainedModels models)
{
    [LlamaCppTheory]
    [InlineData("q8_0", 0.05)]
    [InlineData("q4_0", 0.5)]
    public void Quantized_blocks_match_an_independent_quantizer_and_run_in_llama_cpp(string type, double logitTolerance)
    {
        var (modelDir, adapterDir) = models.Get("llama");
        using var dir = new TempDir();
        string f32Path = Path.Combine(dir.Path, "f32.gguf"), quantPath = Path.Combine(dir.Path, type + ".gguf");
        using (var model = CausalLM.Load(modelDir))
        using (var peft = PeftModel.FromPretrained(model, adapterDir))
        {
            GgufExporter.ExportModel(model, f32Path, new GgufExportOptions { Type = GgmlType.F32 });
            GgufExporter.ExportModel(model, quantPath, new GgufExportOptions { Type = GgufExporter.ParseType(type) });
        }
        var f32 = GgufFile.Open(f32Path);
        var quant = GgufFile.Open(quantPath);
        Assert.Equal(type == "q8_0" ? 7u : 2u, quant.Get<uint>("general.file_type"));
        int matrices = 0;
        foreach (var t in quant.Tensors)
        {
            var reference = f32.ReadFloat32(t.Name);
            if (t.Dimensions.Length == 1) { Assert.Equal(GgmlType.F32, t.Type); continue; }
            Assert.Equal(type == "q8_0" ? GgmlType.Q8_0 : GgmlType.Q4_0, t.Type);
            var bytes = quant.ReadBytes(t);
            var expected = type == "q8_0" ? ReferenceBlocks.QuantizeQ8_0(reference) : ReferenceBlocks.QuantizeQ4_0(reference);
            Assert.True(expected.AsSpan().SequenceEqual(bytes), $"{t.Name}: {type} blocks differ from the reference quantizer");
            var values = type == "q8_0" ? ReferenceBlocks.DequantizeQ8_0(bytes) : ReferenceBlocks.DequantizeQ4_0(bytes);
            Assert.Equal(values, quant.ReadFloat32(t.Name));
            matrices++;
        }
        Assert.True(matrices >= 15);

        int[] prompt = Tokenizer.FromFolder(modelDir).Encode("the best video to watch");
        float[] exact, quantized;
        using (var llama = LlamaCpp.Load(f32Path, 64)) exact = llama.Prefill(prompt);
        using (var llama = LlamaCpp.Load(quantPath, 64)) quantized = llama.Prefill(prompt);
        double diff = GgufAdapterTests.MaxDiff(exact, quantized);
        Assert.True(diff < logitTolerance, $"{type}: logits differ from f32 by {diff}");
    }
}

/// <summary>
/// llama.cpp's Q8_0 and Q4_0 blocks written from their definition, apart from the library: 32 values per block, an
/// IEEE half scale first; Q8_0 then 32 int8 (scale = absmax / 127, value = round half away from zero), Q4_0 16 bytes
/// of nibbles (scale = the value of largest magnitude / -8, q = min(15, trunc(x / scale + 8.5)), element j low nibble
/// and element j + 16 high nibble of byte j).
/// </summary>
public static class ReferenceBlocks
{
    public static byte[] QuantizeQ8_0(float[] x)
    {
        var output = new List<byte>();
        for (int b = 0; b < x.Length; b += 32)
        {
            float amax = x.Skip(b).Take(32).Select(MathF.Abs).Max();
            float d = amax / 127f, inverse = d == 0 ? 0 : 1f / d;
            output.AddRange(BitConverter.GetBytes((Half)d));
            for (int j = 0; j < 32; j++) output.Add(unchecked((byte)(sbyte)MathF.Round(x[b + j] * inverse, MidpointRounding.AwayFromZero)));
        }
        return output.ToArray();
    }

    public static byte[] QuantizeQ4_0(float[] x)
    {
        var output = new List<byte>();
        for (int b = 0; b < x.Length; b += 32)
        {
            var block = x.Skip(b).Take(32).ToArray();
            float extreme = 0;
            foreach (var v in block) if (MathF.Abs(v) > MathF.Abs(extreme)) extreme = v;
            float d = extreme / -8f, inverse = d == 0 ? 0 : 1f / d;
            output.AddRange(BitConverter.GetBytes((Half)d));
            int Q(float v) => Math.Min(15, (int)MathF.Truncate(v * inverse + 8.5f));
            for (int j = 0; j < 16; j++) output.Add((byte)(Q(block[j]) | (Q(block[j + 16]) << 4)));
        }
        return output.ToArray();
    }

    public static float[] DequantizeQ8_0(byte[] bytes)
    {
        var values = new List<float>();
        for (int at = 0; at < bytes.Length; at += 34)
        {
            float d = (float)BitConverter.ToHalf(bytes, at);
            for (int j = 0; j < 32; j++) values.Add((sbyte)bytes[at + 2 + j] * d);
        }
        return values.ToArray();
    }

    public static float[] DequantizeQ4_0(byte[] bytes)
    {
        var values = new List<float>();
        for (int at = 0; at < bytes.Length; at += 18)
        {
            float d = (float)BitConverter.ToHalf(bytes, at);
            var block = new float[32];
            for (int j = 0; j < 16; j++)
            {
                block[j] = ((bytes[at + 2 + j] & 15) - 8) * d;
                block[j + 16] = ((bytes[at + 2 + j] >> 4) - 8) * d;
            }
            values.AddRange(block);
        }
        return values.ToArray();
    }
}
