using PeftSharp.Cli.Commands;
using PeftSharp.Peft;
using PeftSharp.Models;
using PeftSharp.Recipes;

namespace PeftSharp.Tests.Recipes;

public sealed class DemoTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-demo").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void LoraLearnsTheRecommendationsAndTheReportShowsIt()
    {
        var log = new StringWriter();
        // The demo exactly as `peftsharp demo` runs it (about a minute on 2 cores).
        var result = Demo.Run(_root, DemoCommand.BundledData(), log);

        Assert.True(result.After.Bleu.Score > 50 && result.Before.Bleu.Score < 10,
            $"BLEU before {result.Before.Bleu.Score:F2}, after {result.After.Bleu.Score:F2}");
        Assert.True(result.After.RougeL > result.Before.RougeL);
        Assert.Equal(36, result.After.Predictions.Count);
        Assert.True(result.Lora.OutputBytes * 10 < result.Lora.ModelBytes);

        var html = File.ReadAllText(result.ReportPath);
        Assert.Contains("BLEU before LoRA", html);
        Assert.Contains("before training", html);
        Assert.Contains("data-series=\"eval loss\"", html);

        using var model = CausalLM.Load(result.BaseModelDir);
        var peft = PeftModel.FromPretrained(model, result.AdapterDir);
        Assert.Equal(["c_attn"], peft.Configs[PeftModel.DefaultAdapterName].TargetModules!.Names);
        Assert.Contains("4/4 LoRA fine-tuning", log.ToString());
    }
}
