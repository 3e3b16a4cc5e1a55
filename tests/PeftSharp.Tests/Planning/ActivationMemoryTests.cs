using PeftSharp.Autograd;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Planning;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Planning;

/// <summary>
/// The planner's activation estimate against the arena's high-water mark of real LoRA training steps
/// (forward, loss, backward) with lora_dropout 0.1, as people train, on small random models: within 15% for every shape.
/// </summary>
public class ActivationMemoryTests
{
    public const double Tolerance = 0.15;

    /// <summary>Measured arena peak (bytes) of one LoRA step, and the planner's estimate for the same shape.</summary>
    public static (long Measured, long Estimated) Measure(string preset, string arch, int vocab, string targets, int rank, int batch, int seq, bool checkpointing,
        double dropout = 0.1)
    {
        var config = ModelPresets.CreateConfig(preset, arch, vocab);
        using var model = CausalLM.CreateRandom(config, new Rng(1));
        model.GradientCheckpointing = checkpointing;
        var lora = new LoraConfig
        {
            R = rank, LoraAlpha = 2 * rank, LoraDropout = dropout,
            TargetModules = targets == TargetModules.AllLinearKeyword ? TargetModules.AllLinear : TargetModules.FromNames(targets.Split(',')),
        };
        using var peft = PeftModel.Wrap(model, lora, rng: new Rng(2));
        long ranks = peft.LoraLayers.Sum(l => (long)rank);
        long dropoutFeatures = dropout > 0 ? peft.LoraLayers.Sum(l => (long)l.Info.InFeatures) : 0;
        var rng = new Rng(3);
        var tokens = new TokenBatch(batch, seq, Enumerable.Range(0, batch * seq).Select(_ => rng.NextInt(config.VocabSize)).ToArray());
        using var tape = new Tape(1 << 16);
        tape.Backward(peft.Model.Loss(new Ops(tape), tokens));
        Assert.All(peft.TrainableParameters.Where(p => p.Name.Contains("lora_B")), p => Assert.NotEqual(0f, MaxAbs(p)));
        return (tape.Arena.HighWater * sizeof(float), MemoryPlanner.ActivationBytes(config, (long)batch * seq, ranks, checkpointing, dropoutFeatures: dropoutFeatures));
    }

    private static unsafe float MaxAbs(Parameter p)
    {
        float max = 0;
        for (long i = 0; i < p.Length; i++) max = Math.Max(max, Math.Abs(p.Grad[i]));
        return max;
    }

    [Theory]
    [InlineData("tiny", "gpt2", 1024, "c_attn", 8, 1, 32, false)]
    [InlineData("tiny", "gpt2", 1024, "c_attn", 8, 4, 64, true)]
    [InlineData("small", "gpt2", 4096, "c_attn", 8, 2, 128, false)]
    [InlineData("small", "gpt2", 4096, "c_attn", 16, 2, 128, true)]
    [InlineData("small", "gpt2", 4096, "all-linear", 8, 1, 256, false)]
    [InlineData("tiny", "llama", 1024, "q_proj,v_proj", 8, 2, 64, false)]
    [InlineData("tiny", "llama", 1024, "q_proj,v_proj", 8, 2, 64, true)]
    [InlineData("small", "llama", 4096, "q_proj,v_proj", 8, 1, 256, false)]
    [InlineData("small", "qwen2", 4096, "all-linear", 8, 4, 64, true)]
    [InlineData("small", "llama", 4096, "all-linear", 4, 3, 100, false)]
    public void EstimateIsWithinFifteenPercentOfTheArenaPeak(string preset, string arch, int vocab, string targets, int rank, int batch, int seq, bool checkpointing)
    {
        var (measured, estimated) = Measure(preset, arch, vocab, targets, rank, batch, seq, checkpointing);
        double error = Math.Abs(estimated - measured) / (double)measured;
        Assert.True(error <= Tolerance, $"estimate {estimated:N0} B vs measured {measured:N0} B: off by {error:P1}");
    }
}
