using System.Runtime.InteropServices;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>init-model draws each tensor while writing it (in the writer's name order) from the state its parameter starts at.</summary>
public sealed class InitModelLazyTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-initlazy-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>The whole stream drawn eagerly in parameter order, as one generator would: the values every parameter must get.</summary>
    private static Dictionary<string, float[]> EagerDraws(ModelSkeleton skeleton, ulong seed)
    {
        var rng = new Rng(seed);
        var config = skeleton.Config;
        var result = new Dictionary<string, float[]>();
        foreach (var p in skeleton.Parameters)
        {
            var values = new float[p.Count];
            if (p.Shape.Length == 1) values.AsSpan().Fill(p.Name.EndsWith(".bias", StringComparison.Ordinal) ? 0f : 1f);
            else
            {
                float std = config is Gpt2Config && p.Name.EndsWith("c_proj.weight", StringComparison.Ordinal)
                    ? ModelInitializer.InitializerRange / MathF.Sqrt(2f * config.LayerCount) : ModelInitializer.InitializerRange;
                rng.FillNormal(values, 0f, std);
            }
            if (p.Name == "model.embed_tokens.weight" && config.PadTokenId is int pad)
                values.AsSpan(pad * config.HiddenSize, config.HiddenSize).Clear();
            result[p.Name] = values;
        }
        return result;
    }

    [Theory]
    [InlineData("llama", "small", "float32")] // tensors larger than one drawing chunk
    [InlineData("gpt2", "tiny", "float32")]
    [InlineData("qwen2", "tiny", "bfloat16")]
    [InlineData("mistral", "tiny", "float16")]
    public unsafe void EveryTensorHoldsTheDrawsOfOneStreamInParameterOrder(string arch, string preset, string dtype)
    {
        string folder = Path.Combine(_root, arch + dtype);
        var result = ModelInitializer.Write(folder, new InitModelOptions { Architecture = arch, Preset = preset, Seed = 17, Dtype = dtype });
        var expected = EagerDraws(result.Skeleton, 17);
        var type = ModelInitializer.ParseDtype(dtype).DType;
        using var checkpoint = SafetensorsCheckpoint.Open(folder);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), checkpoint.Names.Order(StringComparer.Ordinal));
        Assert.NotEqual(expected.Keys, checkpoint.Names); // the writer's order differs from the drawing order
        foreach (var (name, values) in expected)
        {
            var t = checkpoint[name];
            Assert.Equal(type, t.DType);
            byte[] bytes = new byte[values.Length * type.Size()];
            fixed (float* src = values)
            fixed (byte* dst = bytes)
            {
                if (type == DType.F32) MemoryMarshal.AsBytes(values.AsSpan()).CopyTo(bytes);
                else if (type == DType.BF16) Precision.F32ToBf16(src, (ushort*)dst, values.Length);
                else Precision.F32ToF16(src, (Half*)dst, values.Length);
            }
            if (!t.Bytes.SequenceEqual(bytes)) Assert.Fail($"{name}: stored bytes differ from the eager draws");
        }
    }

    [Fact]
    public void RandomWeightsAreLazyAndRewritableInAnyOrder()
    {
        var skeleton = ModelSkeleton.FromConfig(ModelPresets.CreateConfig("tiny", "llama", 300));
        var entries = ModelInitializer.RandomWeights(skeleton, 4, DType.BF16);
        Assert.Equal(skeleton.Parameters.Select(p => p.Name), entries.Select(e => e.Name));
        string a = Path.Combine(_root, "a.safetensors"), b = Path.Combine(_root, "b.safetensors");
        SafetensorsWriter.Write(a, entries);
        SafetensorsWriter.Write(b, entries.Reverse());
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
    }
}
