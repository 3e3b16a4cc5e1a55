using System.Runtime.InteropServices;
using PeftSharp.Autograd;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Models;

/// <summary>BF16 checkpoints: frozen linear weights and embeddings stay 16-bit views of the file.</summary>
public class HalfWeightTests
{
    /// <summary>Writes a BF16 copy of a tiny model and an F32 copy holding the same bf16-rounded values.</summary>
    private static (string Bf16, string Rounded) WriteCopies(string name, string root)
    {
        string src = ModelGolden.Folder(name), bf16 = Path.Combine(root, "bf16"), rounded = Path.Combine(root, "rounded");
        Directory.CreateDirectory(bf16);
        Directory.CreateDirectory(rounded);
        var half = new List<SafetensorsEntry>();
        var wide = new List<SafetensorsEntry>();
        using (var file = SafetensorsFile.Open(Path.Combine(src, "model.safetensors")))
            foreach (var t in file.Tensors)
            {
                var values = t.ToFloat32();
                var bits = new ushort[values.Length];
                for (int i = 0; i < values.Length; i++) bits[i] = Precision.F32ToBf16(values[i]);
                half.Add(SafetensorsEntry.FromBytes(t.Name, DType.BF16, t.Shape, MemoryMarshal.AsBytes(bits.AsSpan()).ToArray()));
                wide.Add(SafetensorsEntry.FromFloat32(t.Name, t.Shape, bits.Select(Precision.Bf16ToF32).ToArray()));
            }
        SafetensorsWriter.Write(Path.Combine(bf16, "model.safetensors"), half);
        SafetensorsWriter.Write(Path.Combine(rounded, "model.safetensors"), wide);
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(bf16, "config.json"));
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(rounded, "config.json"));
        return (bf16, rounded);
    }

    [Theory]
    [InlineData("tiny-qwen2")]  // tied head: the bf16 embedding is the logits GEMM's weight
    [InlineData("tiny-llama")]  // untied head
    public void Bf16ViewsMatchTheF32ModelOnRoundedWeights(string name)
    {
        string root = Directory.CreateTempSubdirectory("peftsharp-bf16").FullName;
        try
        {
            var (bf16, rounded) = WriteCopies(name, root);
            string norm = "model.layers.0.input_layernorm.weight";
            var options = new LoadOptions { Trainable = n => n == norm };
            using var half = CausalLM.Load(bf16, options);
            using var dense = CausalLM.Load(rounded, options);

            Assert.All(half.Linears, s => Assert.IsType<HalfLinear>(s.Layer));
            Assert.All(dense.Linears, s => Assert.IsType<DenseLinear>(s.Layer));
            // No f32 copy of any matrix: only norms (and Qwen2's biases) are f32 parameters.
            Assert.All(half.Parameters, p => Assert.Single(p.Shape));
            Assert.Null(half.FindParameter("model.embed_tokens.weight"));

            using var golden = SafetensorsFile.Open(Path.Combine(ModelGolden.Folder(name), "golden.safetensors"));
            var batch = ModelGolden.Batch(golden);
            using var tape = new Tape();
            var ops = new Ops(tape);
            var a = half.Loss(ops, batch);
            tape.Backward(a);
            var logitsA = half.Forward(ops, batch).AsSpan().ToArray();
            tape.Reset();
            var b = dense.Loss(ops, batch);
            tape.Backward(b);
            var logitsB = dense.Forward(ops, batch).AsSpan().ToArray();

            Assert.True(ModelGolden.MaxAbsDiff(logitsA, logitsB) < 1e-4f);
            Assert.InRange(a.AsSpan()[0] - b.AsSpan()[0], -1e-4f, 1e-4f);
            // The input gradient flows back through every bf16 layer to the first norm.
            var ga = half.FindParameter(norm)!.GradSpan();
            Assert.Contains(ga.ToArray(), v => v != 0f);
            Assert.True(ModelGolden.MaxAbsDiff(ga, dense.FindParameter(norm)!.GradSpan()) < 1e-4f);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Float32AndFullFineTuneWidenBf16IntoOwnedParameters()
    {
        string root = Directory.CreateTempSubdirectory("peftsharp-bf16").FullName;
        try
        {
            var (bf16, _) = WriteCopies("tiny-qwen2", root);
            using var widened = CausalLM.Load(bf16, new LoadOptions { Float32 = true });
            Assert.All(widened.Linears, s => Assert.IsType<DenseLinear>(s.Layer));
            Assert.False(widened.FindParameter("model.embed_tokens.weight")!.RequiresGrad);
            using var full = CausalLM.Load(bf16, new LoadOptions { FullFineTune = true });
            Assert.All(full.Parameters, p => Assert.True(p.RequiresGrad));
            Assert.Same(full.FindParameter("model.embed_tokens.weight"), ((DenseLinear)full.Linears[^1].Layer).Weight);

            using var frozen = CausalLM.Load(bf16);
            var layer = (HalfLinear)frozen.Linears[0].Layer;
            Assert.False(layer.CanModifyWeight);
            var w = new float[layer.Info.OutFeatures * layer.Info.InFeatures];
            unsafe { fixed (float* p = w) layer.ReadWeight(p); }
            Assert.Equal(((DenseLinear)widened.Linears[0].Layer).Weight.AsSpan().ToArray(), w);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
