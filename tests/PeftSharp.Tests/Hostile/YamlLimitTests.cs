using System.Diagnostics;
using System.Text;
using PeftSharp.Config;

namespace PeftSharp.Tests.Hostile;

/// <summary>Issue 19, items 3 and 5: a YAML run config cannot overflow the stack, expand without bound, or carry an infinite number.</summary>
public class YamlLimitTests
{
    [Fact]
    public void An_alias_inside_its_own_anchor_is_an_error_not_a_stack_overflow()
    {
        var e = Assert.Throws<PeftSharpException>(() => ConfigTree.ParseYaml("x: &a [*a]\n"));
        Assert.Contains("nested deeper than the limit of 64 levels", e.Message);
    }

    [Fact]
    public void Billion_laughs_stops_at_the_expansion_limit()
    {
        var yaml = new StringBuilder("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (int i = 1; i < 10; i++)
            yaml.Append($"a{i}: &a{i} [{string.Join(", ", Enumerable.Repeat($"*a{i - 1}", 9))}]\n");
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<PeftSharpException>(() => ConfigTree.ParseYaml(yaml.ToString()));
        Assert.Contains("expand past the limit of 100,000 values", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void Deep_nesting_is_refused_before_the_tree_is_built()
    {
        string deep = "x: " + new string('[', 100_000) + new string(']', 100_000) + "\n";
        var e = Assert.Throws<PeftSharpException>(() => ConfigTree.ParseYaml(deep));
        Assert.Contains("line 1: YAML nested deeper than the limit of 64 levels", e.Message);
    }

    [Fact]
    public void A_number_beyond_a_double_names_its_line()
    {
        var e = Assert.Throws<PeftSharpException>(() => ConfigTree.ParseYaml("lora:\n  r: 1e400\n"));
        Assert.Equal("line 2: the number 1e400 is out of range (beyond a 64-bit float).", e.Message);
    }

    [Fact]
    public void Ordinary_aliases_still_work()
    {
        var tree = ConfigTree.ParseYaml("base: &b {r: 8}\nlora: *b\n");
        Assert.Equal(8L, (long)tree["lora"]!["r"]!);
    }
}
