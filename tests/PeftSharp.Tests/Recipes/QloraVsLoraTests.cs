using PeftSharp.Config;
using PeftSharp.Models.Init;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Recipes;

/// <summary>QLoRA issue: LoRA and QLoRA on the same data and seed reach losses within 3% after 200 steps.</summary>
public sealed class QloraVsLoraTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-qlora").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private FineTuningResult Train(string model, string name, string quantization, int steps = 200)
    {
        var yaml = $"""
            model:
              name_or_path: "{model}"
            lora:
              r: 8
              lora_alpha: 16
              target_modules: all-linear
            {quantization}
            data:
              train_file: "{Path.Combine(TestAssets.RepoRoot, "examples", "youtube-recs", "train.jsonl")}"
              max_length: 48
            training:
              output_dir: "{Path.Combine(_root, name)}"
              max_steps: {steps}
              per_device_train_batch_size: 8
              learning_rate: 3.0e-3
              lr_scheduler_type: constant
              save_strategy: "no"
              logging_steps: 50
              seed: 5
            """;
        return FineTuning.Run(RunConfig.FromTree(ConfigTree.ParseYaml(yaml)), generationSamples: 0);
    }

    [Fact]
    public void QloraTracksLoraWithinThreePercent()
    {
        string model = Path.Combine(_root, "model");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "llama", Preset = "tiny", Seed = 11 });
        var lora = Train(model, "lora", "");
        var qlora = Train(model, "qlora", """
            quantization:
              load_in_4bit: true
              bnb_4bit_quant_type: nf4
              bnb_4bit_use_double_quant: true
              bnb_4bit_compute_dtype: bfloat16
            """);
        Assert.Equal("qlora", qlora.Method);
        double Final(FineTuningResult r) => r.Train.StepLosses.TakeLast(20).Average();
        double first = lora.Train.StepLosses.Take(5).Average();
        Assert.True(Final(lora) < 0.9 * first, $"LoRA did not learn: {first:F3} → {Final(lora):F3}");
        double gap = Math.Abs(Final(qlora) - Final(lora)) / Final(lora);
        Assert.True(gap <= 0.03, $"LoRA {Final(lora):F4} vs QLoRA {Final(qlora):F4}: {gap:P1} apart");
    }

    [Fact]
    public void APreQuantizedCheckpointTrainsAsStoredAndSaysSo()
    {
        string model = Path.Combine(_root, "model"), quantized = Path.Combine(_root, "model-nf4");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "llama", Preset = "tiny", Seed = 11, Dtype = "bfloat16" });
        PeftSharp.Quantization.QuantizedCheckpoint.Write(model, quantized, new PeftSharp.Quantization.BitsAndBytesConfig
        {
            LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitComputeDtype = "bfloat16",
        });
        const string quantization = """
            quantization:
              load_in_4bit: true
              bnb_4bit_quant_type: nf4
              bnb_4bit_use_double_quant: true
              bnb_4bit_compute_dtype: bfloat16
            """;
        var stored = Train(quantized, "stored", quantization, steps: 3);
        Assert.Contains(stored.Notices, n => n.Contains("already a 4-bit bitsandbytes checkpoint"));
        Assert.DoesNotContain(stored.Notices, n => n.StartsWith("quantized the frozen base", StringComparison.Ordinal));
        var onLoad = Train(model, "on-load", quantization, steps: 3);
        Assert.Contains(onLoad.Notices, n => n.StartsWith("quantized the frozen base", StringComparison.Ordinal));
        // The same codes either way: quantizing the bf16 checkpoint on load equals reading the stored checkpoint.
        Assert.Equal(onLoad.Train.StepLosses, stored.Train.StepLosses);
    }
}
