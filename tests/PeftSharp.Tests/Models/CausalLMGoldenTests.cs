using System.Text.Json;
using PeftSharp.Autograd;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;

namespace PeftSharp.Tests.Models;

/// <summary>
/// Logits, loss and every parameter's gradient (full fine-tuning) against PyTorch references of
/// transformers' GPT-2, Llama (llama3 rope scaling, GQA, untied head) and Qwen2 (q/k/v biases, one
/// kv head, tied head). Tolerance: 1e-4 absolute on logits and loss; gradients 1e-4 × max(1, max |golden|).
/// </summary>
public class CausalLMGoldenTests
{
    [Theory]
    [InlineData("tiny-gpt2")]
    [InlineData("tiny-llama")]
    [InlineData("tiny-qwen2")]
    public void LogitsLossAndGradientsMatchPyTorch(string name)
    {
        string folder = ModelGolden.Folder(name);
        using var model = CausalLM.Load(folder, new LoadOptions { FullFineTune = true });
        using var golden = SafetensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        var batch = ModelGolden.Batch(golden);
        using var tape = new Tape();
        var ops = new Ops(tape);

        var logits = model.Forward(ops, batch);
        Assert.Equal([14, 96], logits.Shape);
        Assert.True(ModelGolden.MaxAbsDiff(logits.AsSpan(), golden["logits"].ToFloat32()) < 1e-4f);
        tape.Reset();

        var loss = model.Loss(ops, batch);
        double expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "golden.json"))).RootElement.GetProperty("loss").GetDouble();
        Assert.InRange(loss.AsSpan()[0], expected - 1e-4, expected + 1e-4);
        tape.Backward(loss);

        var conv1D = model.Linears.Where(l => l.Info.IsConv1D).Select(l => l.Name + ".weight").ToHashSet();
        var parameters = model.Parameters.ToList();
        var gradNames = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith("grad.", StringComparison.Ordinal)).ToList();
        Assert.Equal(gradNames.Count, parameters.Count);
        Assert.Equal(model.Skeleton.Parameters.Select(p => p.Name).Order(), parameters.Select(p => p.Name).Order());
        foreach (var p in parameters)
        {
            var g = golden["grad." + p.Name];
            var want = g.ToFloat32();
            if (conv1D.Contains(p.Name)) want = ModelGolden.Transpose(want, (int)g.Shape[0], (int)g.Shape[1]);
            float scale = MathF.Max(1f, want.Max(MathF.Abs));
            float err = ModelGolden.MaxAbsDiff(p.GradSpan(), want);
            Assert.True(err < 1e-4f * scale, $"{p.Name}: gradient differs by {err} (scale {scale}).");
        }
    }

    [Fact]
    public void FrozenModelRecordsNothingAndLeavesWeightsWithoutGradients()
    {
        using var model = CausalLM.Load(ModelGolden.Folder("tiny-llama"));
        using var golden = SafetensorsFile.Open(Path.Combine(ModelGolden.Folder("tiny-llama"), "golden.safetensors"));
        using var tape = new Tape();
        var loss = model.Loss(new Ops(tape), ModelGolden.Batch(golden));
        Assert.False(loss.RequiresGrad);
        Assert.Equal(0, tape.NodeCount);
        Assert.All(model.Parameters, p => Assert.False(p.RequiresGrad));
    }

    [Fact]
    public void OnlyChosenParametersTrainAndFrozenLinearsGetNoWeightGradient()
    {
        string folder = ModelGolden.Folder("tiny-gpt2");
        using var model = CausalLM.Load(folder, new LoadOptions { Trainable = n => n == "transformer.h.0.ln_1.weight" });
        using var full = CausalLM.Load(folder, new LoadOptions { FullFineTune = true });
        using var golden = SafetensorsFile.Open(Path.Combine(folder, "golden.safetensors"));
        using var tape = new Tape();
        var ops = new Ops(tape);
        var loss = model.Loss(ops, ModelGolden.Batch(golden));
        tape.Backward(loss);
        tape.Reset();
        var fullLoss = full.Loss(ops, ModelGolden.Batch(golden));
        tape.Backward(fullLoss);

        var trainable = model.Parameters.Where(p => p.RequiresGrad).ToList();
        Assert.Equal(["transformer.h.0.ln_1.weight"], trainable.Select(p => p.Name));
        Assert.True(ModelGolden.MaxAbsDiff(trainable[0].GradSpan(), full.FindParameter("transformer.h.0.ln_1.weight")!.GradSpan()) < 1e-6f);
        Assert.Contains(trainable[0].GradSpan().ToArray(), v => v != 0f);
    }

    [Fact]
    public void MissingOrMisshapedTensorsNameTheTensorTheFileAndBothShapes()
    {
        string dir = Directory.CreateTempSubdirectory("peftsharp-models").FullName;
        try
        {
            string src = ModelGolden.Folder("tiny-llama");
            File.Copy(Path.Combine(src, "config.json"), Path.Combine(dir, "config.json"));
            using (var file = SafetensorsFile.Open(Path.Combine(src, "model.safetensors")))
            {
                var entries = file.Tensors.Where(t => t.Name != "model.norm.weight")
                    .Select(t => t.Name == "lm_head.weight"
                        ? SafetensorsEntry.FromFloat32(t.Name, [95, 32], new float[95 * 32])
                        : SafetensorsEntry.FromTensor(t)).ToList();
                SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), entries);
            }
            var e = Assert.Throws<PeftSharpException>(() => CausalLM.Load(dir));
            Assert.Contains("model.norm.weight", e.Message);
            Assert.Contains("model.safetensors", e.Message);
            Assert.Contains("[32]", e.Message);

            using (var file = SafetensorsFile.Open(Path.Combine(src, "model.safetensors")))
            {
                var entries = file.Tensors.Select(t => t.Name == "lm_head.weight"
                    ? SafetensorsEntry.FromFloat32(t.Name, [95, 32], new float[95 * 32])
                    : SafetensorsEntry.FromTensor(t)).ToList();
                SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), entries);
            }
            e = Assert.Throws<PeftSharpException>(() => CausalLM.Load(dir));
            Assert.Contains("'lm_head.weight'", e.Message);
            Assert.Contains("[95, 32]", e.Message);
            Assert.Contains("[96, 32]", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
