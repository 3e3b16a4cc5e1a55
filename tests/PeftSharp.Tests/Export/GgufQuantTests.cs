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
/// Q4_K: a "small" Llama (hidden 256, so every row is whole 256-value super-blocks) exported as Q4_K. The test's own
/// reading of the super-block layout gives the library's values; llama.cpp running the Q4_K file gives the logits it
/// gives on an f32 file of those same dequantized values (so it reads the layout as written), and both are close to
/// the original model's.
/// </summary>
public sealed class GgufQ4KTests
{
    [LlamaCppFact]
    public void Q4_K_layout_is_read_by_llama_cpp_as_written()
    {
        using var dir = new TempDir();
        string modelDir = Path.Combine(dir.Path, "small");
        PeftSharp.Models.Init.ModelInitializer.Write(modelDir, new PeftSharp.Models.Init.InitModelOptions { Architecture = "llama", Preset = "small", Seed = 4 });
        string f32Path = Path.Combine(dir.Path, "f32.gguf"), q4kPath = Path.Combine(dir.Path, "q4k.gguf"), roundTrip = Path.Combine(dir.Path, "q4k-as-f32.gguf");
        using (var model = CausalLM.Load(modelDir))
        {
            GgufExporter.ExportModel(model, f32Path, new GgufExportOptions { Type = GgmlType.F32 });
            var result = GgufExporter.ExportModel(model, q4kPath, new GgufExportOptions { Type = GgufExporter.ParseType("q4_k") });
            Assert.Empty(result.Notices);
        }
        var f32 = GgufFile.Open(f32Path);
        var q4k = GgufFile.Open(q4kPath);
        var writer = new GgufWriter();
        foreach (var (key, value) in q4k.MetadataInOrder) writer.Add(key, value);
        foreach (var t in q4k.Tensors)
        {
            var values = q4k.ReadFloat32(t.Name);
            if (t.Dimensions.Length == 2)
            {
                Assert.Equal(GgmlType.Q4_K, t.Type);
                Assert.Equal(ReferenceBlocks.DequantizeQ4_K(q4k.ReadBytes(t)), values);
                var original = f32.ReadFloat32(t.Name);
                double error = Math.Sqrt(original.Zip(values).Average(p => (p.First - p.Second) * (double)(p.First - p.Second)));
                double rms = Math.Sqrt(original.Average(v => v * (double)v));
                Assert.True(error < 0.12 * rms, $"{t.Name}: Q4_K error {error} against values of RMS {rms}");
            }
            writer.AddTensor(t.Name, t.Dimensions, GgmlType.F32, s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())));
        }
        writer.Write(roundTrip);

        int[] prompt = Tokenizer.FromFolder(modelDir).Encode("the best video to watch");
        float[] exact, quantized, dequantized;
        using (var llama = LlamaCpp.Load(f32Path, 64)) exact = llama.Prefill(prompt);
        using (var llama = LlamaCpp.Load(q4kPath, 64)) quantized = llama.Prefill(prompt);
        using (var llama = LlamaCpp.Load(roundTrip, 64)) dequantized = llama.Prefill(prompt);
        double layout = GgufAdapterTests.MaxDiff(quantized, dequantized), total = GgufAdapterTests.MaxDiff(quantized, exact);
        // llama.cpp multiplies Q4_K weights by activations rounded to 8 bits (Q8_K): a small difference remains (0.016
        // here), far below the quantization error itself (0.25); a misread layout would be of that size or more.
        Assert.True(layout < 0.05 && layout < total / 4, $"llama.cpp's Q4_K logits differ from the dequantized f32 file's by {layout} (from f32 by {total})");
        Assert.True(total < 0.5, $"Q4_K logits differ from f32 by {total}");
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

    /// <summary>
    /// Q4_K super-blocks of 256 values (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins (sub-blocks 0-3:
    /// low 6 bits of bytes 0-3 and 4-7; sub-blocks 4-7: nibbles of bytes 8-11 plus the top two bits of bytes 0-3 for the
    /// scale and 4-7 for the min), then 128 bytes: for each pair of sub-blocks, 32 bytes with the first's value in the
    /// low nibble and the second's in the high nibble. value = d·scale·q − dmin·min.
    /// </summary>
    public static float[] DequantizeQ4_K(byte[] bytes)
    {
        var values = new float[bytes.Length / 144 * 256];
        for (int b = 0; b < bytes.Length / 144; b++)
        {
            int at = b * 144;
            float d = (float)BitConverter.ToHalf(bytes, at), dmin = (float)BitConverter.ToHalf(bytes, at + 2);
            var packed = bytes.AsSpan(at + 4, 12);
            for (int sub = 0; sub < 8; sub++)
            {
                int scale, min;
                if (sub < 4) { scale = packed[sub] % 64; min = packed[sub + 4] % 64; }
                else
                {
                    scale = (packed[sub + 4] % 16) + (packed[sub - 4] / 64) * 16;
                    min = (packed[sub + 4] / 16) + (packed[sub] / 64) * 16;
                }
                for (int l = 0; l < 32; l++)
                {
                    byte q = bytes[at + 16 + (sub / 2) * 32 + l];
                    int nibble = sub % 2 == 0 ? q % 16 : q / 16;
                    values[b * 256 + sub * 32 + l] = d * scale * nibble - dmin * min;
                }
            }
        }
        return values;
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
