using System.Diagnostics;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Tests.Hostile;

/// <summary>
/// Issue 19, item 4: a tokenizer.json Split pattern such as (a+)+$ ran for more than 20 s on 41 characters.
/// Patterns the non-backtracking engine accepts now run in linear time; the others have a match timeout
/// whose error names the file and the pattern.
/// </summary>
public sealed class TokenizerRegexTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-redos").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string TokenizerWithSplit(string pattern)
    {
        string escaped = System.Text.Json.JsonSerializer.Serialize(pattern);
        string path = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(path, $$"""
            {
              "added_tokens": [],
              "normalizer": null,
              "pre_tokenizer": {"type": "Split", "pattern": {"Regex": {{escaped}}}, "behavior": "Isolated", "invert": false},
              "post_processor": null,
              "decoder": null,
              "model": {"type": "BPE", "vocab": {"a": 0, "c": 1}, "merges": []}
            }
            """);
        return path;
    }

    [Fact]
    public void A_catastrophic_pattern_without_lookarounds_runs_in_linear_time()
    {
        var tokenizer = Tokenizer.FromFile(TokenizerWithSplit("(a+)+$"));
        var clock = Stopwatch.StartNew();
        var ids = tokenizer.Encode(new string('a', 5000) + "c", addSpecialTokens: false);
        Assert.Equal(5001, ids.Length);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
    }

    [Fact]
    public void A_catastrophic_pattern_that_needs_backtracking_times_out_naming_the_file()
    {
        string path = TokenizerWithSplit("(a|aa)+(?=b)");
        var tokenizer = Tokenizer.FromFile(path);
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<PeftSharpException>(() => tokenizer.Encode(new string('a', 60) + "c", addSpecialTokens: false));
        Assert.StartsWith(path + ": the regex '(a|aa)+(?=b)' took longer than the limit of 2 s", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
    }

    [Fact]
    public void An_invalid_pattern_names_the_file()
    {
        string path = TokenizerWithSplit("(a");
        var e = Assert.Throws<PeftSharpException>(() => Tokenizer.FromFile(path));
        Assert.StartsWith(path + ": the regex '(a' is not valid", e.Message);
    }
}
