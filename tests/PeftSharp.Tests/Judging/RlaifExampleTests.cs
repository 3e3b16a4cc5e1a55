using PeftSharp.AI.Judging;
using PeftSharp.Config;

namespace PeftSharp.Tests.Judging;

/// <summary>examples/rlaif's configs load as they are (the run itself needs the demo's models: see its README).</summary>
public sealed class RlaifExampleTests
{
    private static string Example(string file) => Path.Combine(TestAssets.RepoRoot, "examples", "rlaif", file);

    [Fact]
    public void TheConfigsLoad()
    {
        var sft = RunConfig.Load(Example("judge-sft.yaml"));
        Assert.Equal("sft", sft.Trainer);
        Assert.True(sft.Data.AssistantOnlyLoss);
        var dpo = RunConfig.Load(Example("dpo.yaml"));
        Assert.Equal("dpo", dpo.Trainer);
        Assert.EndsWith(Path.Combine("runs", "rlaif", "pairs.jsonl"), dpo.Data.TrainFile);

        var judge = PreferencePairsConfig.Load(Example("judge.yaml"));
        Assert.Equal(2, judge.NumAnswers);
        Assert.Equal("openai", judge.Judge.Type);
        Assert.Equal("http://127.0.0.1:8765/v1", judge.Judge.BaseUrl);
        Assert.True(judge.Judge.Options.BothOrders);
        Assert.EndsWith(Path.Combine("examples", "preference", "pairs.jsonl"), judge.PromptsFile);
        // The judge prompt is the one make_judge_data.py trains on.
        Assert.Contains(judge.Judge.Options.PairwiseTemplate.Replace("\n", "\\n"), File.ReadAllText(Example("make_judge_data.py")).Replace("\"\n            \"", ""));
    }
}
