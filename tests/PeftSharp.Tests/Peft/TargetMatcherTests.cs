using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Peft;

public class TargetMatcherTests
{
    private static List<LinearModuleInfo> Gpt2Modules(int layers = 3)
    {
        var list = new List<LinearModuleInfo>();
        for (int i = 0; i < layers; i++)
        {
            list.Add(new($"transformer.h.{i}.attn.c_attn", 64, 192, true, IsConv1D: true));
            list.Add(new($"transformer.h.{i}.attn.c_proj", 64, 64, true, IsConv1D: true));
            list.Add(new($"transformer.h.{i}.mlp.c_fc", 64, 256, true, IsConv1D: true));
            list.Add(new($"transformer.h.{i}.mlp.c_proj", 256, 64, true, IsConv1D: true));
        }
        list.Add(new("lm_head", 64, 100, false, IsOutputLayer: true));
        return list;
    }

    private static string[] Names(TargetMatch m) => m.Modules.Select(x => x.Name).ToArray();

    [Fact]
    public void SuffixEntryMatchesOnlyWholeComponents()
    {
        var m = TargetMatcher.Match(new LoraConfig { TargetModules = TargetModules.FromNames(["c_proj"]) }, Gpt2Modules());
        Assert.Equal(6, m.Modules.Count);
        Assert.All(m.Modules, x => Assert.EndsWith(".c_proj", x.Name));
        Assert.Equal("c_proj: 6 modules (attn.c_proj ×3, mlp.c_proj ×3)", m.Describe().Single());

        var dotted = TargetMatcher.Match(new LoraConfig { TargetModules = TargetModules.FromNames(["mlp.c_proj"]) }, Gpt2Modules());
        Assert.Equal(3, dotted.Modules.Count);
    }

    [Fact]
    public void RegexMustMatchTheWholeName()
    {
        var m = TargetMatcher.Match(new LoraConfig { TargetModules = TargetModules.FromPattern(@".*\.h\.[01]\.attn\.c_attn") }, Gpt2Modules());
        Assert.Equal(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"], Names(m));
        Assert.Throws<PeftSharpException>(() => TargetMatcher.Match(new LoraConfig { TargetModules = TargetModules.FromPattern("c_attn") }, Gpt2Modules()));
    }

    [Fact]
    public void AllLinearSkipsTheOutputLayer()
    {
        var m = TargetMatcher.Match(new LoraConfig { TargetModules = TargetModules.AllLinear }, Gpt2Modules());
        Assert.Equal(12, m.Modules.Count);
        Assert.DoesNotContain(m.Modules, x => x.Name == "lm_head");
    }

    [Fact]
    public void ExcludeAndLayersToTransform()
    {
        var c = new LoraConfig
        {
            TargetModules = TargetModules.FromNames(["c_attn", "c_proj"]),
            ExcludeModules = TargetModules.FromNames(["mlp.c_proj"]),
            LayersToTransform = [0, 2],
        };
        Assert.Equal(["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.2.attn.c_attn", "transformer.h.2.attn.c_proj"],
            Names(TargetMatcher.Match(c, Gpt2Modules())));
        c.LayersPattern = ["layers"];
        Assert.Throws<PeftSharpException>(() => TargetMatcher.Match(c, Gpt2Modules()));
        c.LayersPattern = ["h"];
        Assert.Equal(4, TargetMatcher.Match(c, Gpt2Modules()).Modules.Count);
    }

    [Fact]
    public void DefaultsPerModelType()
    {
        Assert.Equal(3, TargetMatcher.Match(new LoraConfig(), Gpt2Modules(), "gpt2").Modules.Count);
        var e = Assert.Throws<PeftSharpException>(() => TargetMatcher.Match(new LoraConfig(), Gpt2Modules(), "bert"));
        Assert.Contains("target_modules is not set", e.Message);
    }

    [Fact]
    public void AnEntryThatMatchesNothingIsNamedWithTheAvailableModules()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromNames(["c_attn", "q_proj", "c_atn"]) };
        var e = Assert.Throws<PeftSharpException>(() => TargetMatcher.Match(c, Gpt2Modules()));
        Assert.Contains("\"q_proj\", \"c_atn\"", e.Message);
        Assert.Contains("Did you mean \"c_attn\"?", e.Message);
        Assert.Contains("attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj, lm_head", e.Message);
    }
}
