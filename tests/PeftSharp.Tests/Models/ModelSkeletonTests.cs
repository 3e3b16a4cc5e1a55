using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;

namespace PeftSharp.Tests.Models;

public class ModelSkeletonTests
{
    private static ModelSkeleton Load(string name) =>
        ModelSkeleton.FromConfig(ModelConfig.Load(Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "configs", name + ".json")));

    [Theory]
    [InlineData("distilgpt2", 81_912_576L)]
    [InlineData("gpt2", 124_439_808L)]
    [InlineData("qwen2.5-0.5b-instruct", 494_032_768L)]
    [InlineData("llama-2-7b", 6_738_415_616L)]
    [InlineData("mistral-7b-v0.1", 7_241_732_096L)]
    public void CountsTheParametersTransformersCounts(string config, long expected) =>
        Assert.Equal(expected, Load(config).ParameterCount);

    [Fact]
    public void NamesModulesAsTransformersDoes()
    {
        var gpt2 = Load("distilgpt2");
        Assert.Equal(6 * 4 + 1, gpt2.Linears.Count);
        var cAttn = gpt2.Linears[0];
        Assert.Equal(("transformer.h.0.attn.c_attn", 768, 2304, true), (cAttn.Name, cAttn.InFeatures, cAttn.OutFeatures, cAttn.IsConv1D));
        Assert.True(gpt2.Linears[^1].IsOutputLayer);

        var qwen = Load("qwen2.5-0.5b-instruct");
        var v = qwen.Linears.Single(l => l.Name == "model.layers.3.self_attn.v_proj");
        Assert.Equal((896, 128, true), (v.InFeatures, v.OutFeatures, v.HasBias));
        Assert.False(qwen.Linears.Single(l => l.Name == "model.layers.3.self_attn.o_proj").HasBias);
        Assert.DoesNotContain(qwen.Parameters, p => p.Name == "lm_head.weight");
    }
}
