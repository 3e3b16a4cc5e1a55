using PeftSharp.Autograd;
using PeftSharp.Config;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Recipes;

/// <summary>PEFT's bias "all" from a config file: every bias trains (LayerNorm biases too), and the adapter loads back for inference and merging.</summary>
public sealed class BiasAllTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-bias-all").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void BiasAllTrainsEveryBiasAndTheAdapterLoadsForInferenceAndMerge()
    {
        string model = Path.Combine(_root, "model"), output = Path.Combine(_root, "out"), merged = Path.Combine(_root, "merged");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "gpt2", Preset = "tiny", Seed = 2 });
        var yaml = $"""
            model:
              name_or_path: "{model}"
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [c_attn]
              bias: all
            data:
              train_file: "{Path.Combine(TestAssets.RepoRoot, "examples", "youtube-recs", "train.jsonl")}"
              max_length: 32
            training:
              output_dir: "{output}"
              max_steps: 3
              per_device_train_batch_size: 4
              learning_rate: 1.0e-2
              save_strategy: "no"
            """;
        var result = FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml)), generationSamples: 0);
        Assert.Equal("lora", result.Method);

        using (var adapter = SafetensorsFile.Open(Path.Combine(output, "adapter_model.safetensors")))
        using (var source = SafetensorsFile.Open(Path.Combine(model, "model.safetensors")))
        {
            // PEFT's keys (state_dict names with bias in them): the targeted layer's base_layer.bias, an untargeted
            // linear's and a LayerNorm's own bias; each once, and trained away from the base.
            var biasKeys = adapter.Tensors.Select(t => t.Name).Where(n => n.Contains("bias")).Order().ToArray();
            var expected = source.Tensors.Select(t => t.Name).Where(n => n.EndsWith(".bias", StringComparison.Ordinal))
                .Select(n => "base_model.model." + (n.Contains("c_attn") ? n.Replace(".bias", ".base_layer.bias") : n)).Order().ToArray();
            Assert.Equal(expected, biasKeys);
            foreach (var (bias, key) in new[] { ("transformer.h.0.ln_1.bias", "transformer.h.0.ln_1.bias"),
                ("transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_attn.base_layer.bias"), ("transformer.h.0.mlp.c_fc.bias", "transformer.h.0.mlp.c_fc.bias") })
                Assert.NotEqual(source[bias].ToFloat32(), adapter["base_model.model." + key].ToFloat32());
        }

        var batch = new TokenBatch(1, 5, [3, 8, 1, 20, 7]);
        float[] adapted;
        using (var frozen = CausalLM.Load(model))
        using (var peft = PeftModel.FromPretrained(frozen, output))
        {
            using var tape = new Tape { GradEnabled = false };
            adapted = frozen.Forward(new Ops(tape), batch).AsSpan().ToArray();
            peft.SaveMerged(merged);
        }
        using var base_ = CausalLM.Load(model);
        using var mergedModel = CausalLM.Load(merged);
        using var check = new Tape { GradEnabled = false };
        var baseline = base_.Forward(new Ops(check), batch).AsSpan().ToArray();
        var fromMerged = mergedModel.Forward(new Ops(check), batch).AsSpan().ToArray();
        Assert.True(Models.ModelGolden.MaxAbsDiff(adapted, fromMerged) < 1e-4f);
        Assert.True(Models.ModelGolden.MaxAbsDiff(adapted, baseline) > 1e-3f, "the trained biases change the output");
    }
}
