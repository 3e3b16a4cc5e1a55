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

/// <summary>The non-backtracking engine must find the matches the backtracking engine finds, for the patterns real tokenizers use.</summary>
public class NonBacktrackingAgreementTests
{
    [Theory]
    // llama3's and qwen's Split patterns without their one lookahead alternative, GPT-2's likewise, and the Whitespace pre-tokenizer.
    [InlineData(@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+")]
    [InlineData(@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+")]
    [InlineData(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+")]
    [InlineData(@"\w+|[^\w\s]+")]
    public void Same_matches_as_the_backtracking_engine(string pattern)
    {
        var split = new SplitRegex(pattern, false);
        Assert.True(split.IsNonBacktracking);
        var reference = new System.Text.RegularExpressions.Regex(pattern, System.Text.RegularExpressions.RegexOptions.CultureInvariant);
        string text = "Hello, World! It's 2024-12-05: naïve café — 12345 apples\r\n\n  tabs\tand  spaces  I'LL you'RE ÆØÅ 東京 مرحبا 😀 x=1+2; {\"k\": [1, 2]}\n";
        var got = new List<(int, int)>();
        split.Matches(text, got);
        var expected = reference.Matches(text).Select(m => (m.Index, m.Index + m.Length)).ToList();
        Assert.Equal(expected, got);
    }
}
