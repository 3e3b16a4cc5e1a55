using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using Xunit;

namespace PeftSharp.Tests.Peft;

public sealed class PeftModelTests
{
    private static LoraConfig Config(string targets, int r = 8) => new()
    {
        R = r, LoraAlpha = 2 * r, TargetModules = TargetModules.FromNames(targets.Split(',')),
    };

    // GPT-2 family: wte V·e, wpe P·e, per layer ln_1/ln_2 (2·2e), c_attn e·3e+3e, attn.c_proj e·e+e,
    // c_fc e·4e+4e, mlp.c_proj 4e·e+e, then ln_f 2e; lm_head is tied.
    private static long Gpt2Params(long v, long p, long e, long layers) =>
        v * e + p * e + layers * (4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e)) + 2 * e;

    [Theory]
    [InlineData("distilgpt2.json", 6, "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797")]
    [InlineData("gpt2.json", 12, "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364")]
    public void Gpt2CAttnRank8_PrintsPeftsLine(string file, int layers, string expected)
    {
        var cfg = FakeCausalLM.LoadConfig(file);
        long trainable = layers * 8L * (768 + 2304);
        long all = Gpt2Params(50257, 1024, 768, layers) + trainable;
        Assert.Equal(expected, PeftModel.FormatTrainable(trainable, all));
        var config = Config("c_attn");
        Assert.Equal(expected, PeftReport.FromSkeleton(ModelSkeleton.FromConfig(cfg), config).TrainableLine);

        using var model = new FakeCausalLM(cfg, shapeOnly: true);
        using var peft = PeftModel.Wrap(model, Config("c_attn"), rng: new Rng(1));
        Assert.Equal(expected, peft.PrintTrainableParameters());
        Assert.Equal(trainable, peft.TrainableParameters.Sum(p => p.Length));
        Assert.Equal(["fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True."], peft.Notices);
        Assert.True(peft.Configs["default"].FanInFanOut);
    }

    [Fact]
    public void DeepSeekQwen15B_QV_Rank16_CountsAsPeft()
    {
        var cfg = FakeCausalLM.LoadConfig("deepseek-r1-distill-qwen-1.5b.json");
        long v = 151936, h = 1536, inter = 8960, layers = 28, kv = 2 * 128;
        long perLayer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h;
        long baseParams = v * h + layers * perLayer + h + v * h; // untied lm_head
        long trainable = layers * 16L * ((h + h) + (h + kv));
        long all = baseParams + trainable;
        string expected = string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {100.0 * trainable / all:F4}");
        Assert.Equal("trainable params: 2,179,072 || all params: 1,779,267,072 || trainable%: 0.1225", expected);
        Assert.Equal(expected, PeftReport.FromSkeleton(ModelSkeleton.FromConfig(cfg), Config("q_proj,v_proj", 16)).TrainableLine);
        using var model = new FakeCausalLM(cfg, shapeOnly: true);
        using var peft = PeftModel.Wrap(model, Config("q_proj,v_proj", 16));
        Assert.Equal(expected, peft.PrintTrainableParameters());
    }

    [Fact]
    public void Wrap_RefusesATrainableBase_AndBiasAllNeedsTrainableNormBiases()
    {
        var rng = new Rng(2);
        using var trainable = new FakeCausalLM(FakeCausalLM.TinyGpt2(), shapeOnly: false, rng, trainableBiases: true);
        var e = Assert.Throws<PeftSharpException>(() => PeftModel.Wrap(trainable, Config("c_attn")));
        Assert.Contains("ln_1.bias is trainable", e.Message);
        using var frozen = new FakeCausalLM(FakeCausalLM.TinyGpt2(), shapeOnly: false, rng);
        var cfg = Config("c_attn");
        cfg.Bias = "all";
        e = Assert.Throws<PeftSharpException>(() => PeftModel.Wrap(frozen, cfg));
        Assert.Contains("bias \"all\"", e.Message);
    }

    [Theory]
    [InlineData("none", 128)]
    [InlineData("lora_only", 128 + 2 * 24)]
    [InlineData("all", 128 + 2 * (24 + 8 + 32 + 8) + 2 * 16 + 8)]
    public void BiasModes_TrainPeftsBiases_AndCountLikeTheReport(string bias, long expectedTrainable)
    {
        var cfg = FakeCausalLM.TinyGpt2();
        using var model = new FakeCausalLM(cfg, shapeOnly: false, new Rng(3), trainableBiases: bias == "all");
        var config = Config("c_attn", 2);
        config.Bias = bias;
        using var peft = PeftModel.Wrap(model, config);
        var (trainable, all) = peft.CountParameters();
        var report = PeftReport.FromSkeleton(ModelSkeleton.FromConfig(cfg), config);
        Assert.Equal(expectedTrainable, trainable);
        Assert.Equal(report.TrainableParameters, trainable);
        Assert.Equal(report.AllParameters, all);
        Assert.Equal(ModelSkeleton.FromConfig(cfg).ParameterCount + 128, all);
    }
}
