using PeftSharp.Config;

namespace PeftSharp.Tests.Config;

public class UserGuideTests
{
    [Fact]
    public void EveryConfigKeyIsDocumented()
    {
        var guide = File.ReadAllText(Path.Combine(TestAssets.RepoRoot, "docs", "USER_GUIDE.md"));
        var missing = RunConfig.Sections.SelectMany(s => s.Keys.Keys.Select(k => $"{s.Name}.{k}"))
            .Where(k => !guide.Contains($"`{k[(k.IndexOf('.') + 1)..]}`")).ToList();
        Assert.True(missing.Count == 0, "docs/USER_GUIDE.md does not document: " + string.Join(", ", missing));
        foreach (var section in RunConfig.Sections)
            Assert.Contains($"## {section.Name}", guide);
    }
}
