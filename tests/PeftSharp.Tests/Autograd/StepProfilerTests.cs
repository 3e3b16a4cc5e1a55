using System.Diagnostics;
using PeftSharp.Autograd;
using PeftSharp.Cli.Commands;
using PeftSharp.Config;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Quantization;
using PeftSharp.Tensors;
using PeftSharp.Training.Optimizers;

namespace PeftSharp.Tests.Autograd;

public class StepProfilerTests
{
    /// <summary>A QLoRA step of a tiny Llama (NF4 + double quant, bf16 compute, LoRA with dropout on q/v, checkpointing, AdamW).</summary>
    private sealed class QloraStep : IDisposable
    {
        private readonly CausalLM _model;
        private readonly PeftModel _peft;
        private readonly AdamW _optimizer;
        private readonly Tape _tape = new(1 << 16);
        private readonly Rng _rng = new(3);

        public QloraStep()
        {
            var config = ModelConfig.Parse("""
                {"model_type": "llama", "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 96, "max_position_embeddings": 64}
                """);
            _model = CausalLM.CreateRandom(config, new Rng(7));
            QuantizedModel.QuantizeLinears(_model, new BitsAndBytesConfig
            {
                LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitComputeDtype = "bfloat16",
            });
            _model.GradientCheckpointing = true;
            _peft = PeftModel.Wrap(_model, new LoraConfig
            {
                R = 4, LoraAlpha = 8, LoraDropout = 0.1, TargetModules = TargetModules.FromNames(["q_proj", "v_proj"]),
            }, rng: new Rng(2));
            _optimizer = new AdamW(_peft.TrainableParameters, learningRate: 1e-3f);
        }

        public void Run()
        {
            var batch = new TokenBatch(2, 32, Enumerable.Range(0, 64).Select(_ => _rng.NextInt(96)).ToArray());
            _tape.Backward(_peft.Model.Loss(new Ops(_tape), batch));
            _tape.Reset();
            using var part = StepProfiler.Enter(StepPart.Optimizer);
            _optimizer.Step();
            _optimizer.ZeroGrad();
        }

        public void Dispose()
        {
            _optimizer.Dispose();
            _peft.Dispose();
            _model.Dispose();
            _tape.Dispose();
        }
    }

    [Fact]
    public void PartsSumToTheStepAndEachRunsWhereExpected()
    {
        using var step = new QloraStep();
        step.Run();
        long start = Stopwatch.GetTimestamp();
        StepProfiler.Start();
        for (int i = 0; i < 5; i++) step.Run();
        var profile = StepProfiler.Stop();
        double wall = Stopwatch.GetElapsedTime(start).TotalSeconds;

        Assert.Equal(profile.WallSeconds, profile.TotalSeconds, 9);
        Assert.InRange(profile.TotalSeconds / wall, 0.97, 1.0);
        // The base's products, LoRA, attention and the layer's own ops run in all three phases; the recomputation is theirs alone.
        foreach (var part in new[] { StepPart.Linear4Bit, StepPart.Lora, StepPart.Attention, StepPart.NormsActivations })
            foreach (var phase in Enum.GetValues<StepPhase>())
                Assert.True(profile.Seconds(part, phase) > 0, $"{part} {phase}: no time");
        foreach (var part in new[] { StepPart.Embedding, StepPart.HeadLoss, StepPart.Optimizer, StepPart.Other })
            Assert.Equal(0, profile.Seconds(part, StepPhase.Recompute));
        Assert.True(profile.Seconds(StepPart.Embedding, StepPhase.Forward) > 0);
        Assert.True(profile.Seconds(StepPart.HeadLoss, StepPhase.Forward) > 0);
        Assert.True(profile.Seconds(StepPart.HeadLoss, StepPhase.Backward) > 0);
        Assert.True(profile.Seconds(StepPart.Optimizer, StepPhase.Forward) > 0);
        Assert.Equal(0, profile.Seconds(StepPart.Optimizer, StepPhase.Backward));
        // The frozen embedding records no backward node.
        Assert.Equal(0, profile.Seconds(StepPart.Embedding, StepPhase.Backward));
    }

    [Fact]
    public void OffItRecordsNothingAndOtherThreadsAreNotProfiled()
    {
        Assert.False(StepProfiler.IsProfiling);
        Assert.Throws<InvalidOperationException>(() => StepProfiler.Stop());
        using var step = new QloraStep();
        step.Run();
        StepProfiler.Start();
        bool other = true;
        var thread = new Thread(() =>
        {
            other = StepProfiler.IsProfiling;
            step.Run();
        });
        thread.Start();
        thread.Join();
        var profile = StepProfiler.Stop();
        Assert.False(other);
        Assert.Equal(profile.WallSeconds, profile.Seconds(StepPart.Other, StepPhase.Forward), 9);
    }

    [Fact]
    public void TrainProfileProfilesEachOptimizerStep()
    {
        string root = Directory.CreateTempSubdirectory("peftsharp-profile").FullName;
        try
        {
            string model = Path.Combine(root, "model"), data = Path.Combine(root, "data.jsonl");
            ModelInitializer.Write(model, new InitModelOptions { Architecture = "llama", Preset = "tiny", Seed = 2 });
            File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $$"""{"prompt": "Topic {{i}}?", "completion": " Video {{i}}."}"""));
            var config = RunConfig.FromTree(ConfigTree.ParseYaml($"""
                model:
                  name_or_path: "{model}"
                quantization:
                  load_in_4bit: true
                  bnb_4bit_quant_type: nf4
                  bnb_4bit_use_double_quant: true
                  bnb_4bit_compute_dtype: bfloat16
                lora:
                  r: 4
                  lora_alpha: 8
                  target_modules: [q_proj, v_proj]
                data:
                  train_file: "{data}"
                training:
                  output_dir: "{Path.Combine(root, "out")}"
                  max_steps: 3
                  per_device_train_batch_size: 2
                  gradient_checkpointing: true
                  report_to: none
                """));
            var output = new StringWriter();
            var result = TrainCommand.Run(config, output, profileSteps: true);
            var profile = result.Train.Profile!;
            Assert.False(StepProfiler.IsProfiling);
            Assert.Equal(3, profile.Spans);
            Assert.True(profile.Seconds(StepPart.Linear4Bit, StepPhase.Recompute) > 0);
            Assert.True(profile.Seconds(StepPart.Optimizer) > 0);
            Assert.Equal(profile.WallSeconds, profile.TotalSeconds, 9);
            Assert.Contains("step profile: ", output.ToString());
            Assert.Matches(@"\n  linear4bit +\d+\.\d{3} s", output.ToString());
            Assert.Contains("step time: linear4bit", File.ReadAllText(result.ReportPath)); // report.html's final metrics
        }
        finally
        {
            Directory.Delete(root, true);
        }
    }
}
