using System.Text;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Tests.Formats;

public class TokenizerTests
{
    [Fact]
    public void ByteLevelMappingRoundTripsEveryByte()
    {
        var seen = new HashSet<char>();
        for (int b = 0; b < 256; b++)
        {
            char c = ByteLevel.ByteToChar((byte)b);
            Assert.True(seen.Add(c), $"byte {b} maps to a character already used");
            Assert.Equal(b, ByteLevel.CharToByte(c));
        }
        Assert.Equal('\u0120', ByteLevel.ByteToChar((byte)' '));
        Assert.Equal('\u010A', ByteLevel.ByteToChar((byte)'\n'));
        Assert.Equal('A', ByteLevel.ByteToChar((byte)'A'));
        Assert.Equal(-1, ByteLevel.CharToByte('\u4E2D'));
        Assert.Equal("ä¸Ń", ByteLevelPreTokenizer.Map("中"));
    }

    [Theory]
    [InlineData("cafe\u0301", "caf\u00E9")]
    [InlineData("A\u030A", "\u00C5")]
    [InlineData("\u1E0B\u0323", "\u1E0D\u0307")]
    [InlineData("\u1100\u1161\u11A8", "\uAC01")]
    [InlineData("\u212B", "\u00C5")]
    [InlineData("a\u0328\u0301", "\u0105\u0301")]
    [InlineData("plain ascii", "plain ascii")]
    public void NfcComposesLikeUnicode(string input, string expected) =>
        Assert.Equal(expected, UnicodeNfc.Normalize(input));

    [Theory]
    [InlineData("Removed", "a|b|c")]
    [InlineData("Isolated", "a|-|b|-|-|c")]
    [InlineData("MergedWithPrevious", "a-|b-|-|c")]
    [InlineData("MergedWithNext", "a|-b|-|-c")]
    [InlineData("Contiguous", "a|-|b|--|c")]
    public void SplitBehaviorsMatchHuggingFace(string behavior, string expected)
    {
        var split = new SplitPreTokenizer(new SplitRegex("-", literal: true), Enum.Parse<SplitBehavior>(behavior), invert: false);
        var segments = new List<Segment> { new("a-b--c", true) };
        split.PreTokenize(segments);
        Assert.Equal(expected, string.Join('|', segments.Select(s => s.Text)));
        Assert.True(segments[0].AtStart);
        Assert.All(segments.Skip(1), s => Assert.False(s.AtStart));
    }

    [Fact]
    public void SplitRegexSeesAstralLettersAsLetters()
    {
        var regex = new SplitRegex(@"\p{L}+|\p{N}", literal: false);
        var matches = new List<(int Start, int End)>();
        regex.Matches("\U0001D518\U0001D52B1x", matches);
        Assert.Equal([(0, 4), (4, 5), (5, 6)], matches);
    }

    [AssetFact]
    public void ByteFallbackTokensDecodeToUtf8OrReplacementCharacters()
    {
        var llama2 = TokenizerGoldenTests.Get("llama2");
        int Id(string token) => llama2.TokenToId(token) ?? throw new Exception(token);
        int[] grin = [Id("<0xF0>"), Id("<0x9F>"), Id("<0x98>"), Id("<0x80>")];
        Assert.Equal("\U0001F600", llama2.Decode(grin));
        Assert.Equal(grin, llama2.Encode("\U0001F600", addSpecialTokens: false)[1..]);
        Assert.Equal("a\uFFFD\uFFFDb", llama2.Decode([Id("a"), Id("<0xE4>"), Id("<0xB8>"), Id("b")]));
        Assert.Equal(1, llama2.BosTokenId);
        Assert.Equal(2, llama2.EosTokenId);
        Assert.Equal("<unk>", llama2.UnkToken);
        Assert.Equal(2, llama2.PadTokenId);
        Assert.Null(TokenizerGoldenTests.Get("mistral-7b").PadToken);
        Assert.Equal(32000, llama2.VocabSize);
    }

    [AssetFact]
    public void SkipSpecialTokensDropsThemOnDecode()
    {
        var qwen = TokenizerGoldenTests.Get("qwen");
        var ids = qwen.Encode("<|im_start|>user\nhi<|im_end|>");
        Assert.Equal(151644, ids[0]);
        Assert.Equal("user\nhi", qwen.Decode(ids, skipSpecialTokens: true));
        Assert.Equal(151645, qwen.EosTokenId);
        Assert.Equal(151643, qwen.PadTokenId);
        Assert.Null(qwen.BosTokenId);
    }

    [AssetFact]
    public void QwenNormalizesToNfcBeforeTokenizing()
    {
        var qwen = TokenizerGoldenTests.Get("qwen");
        Assert.Equal(qwen.Encode("caf\u00E9 \u00C5ngstr\u00F6m"), qwen.Encode("cafe\u0301 A\u030Angstro\u0308m"));
    }

    [AssetFact]
    public void LegacyVocabAndMergesGiveTheSameIdsAsTokenizerJson()
    {
        var json = TokenizerGoldenTests.Get("gpt2");
        string source = TestAssets.Path("tokenizers", "gpt2");
        string dir = Path.Combine(Path.GetTempPath(), "peftsharp-legacy-gpt2-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer_config.json" })
                File.Copy(Path.Combine(source, f), Path.Combine(dir, f));
            var legacy = Tokenizer.FromFolder(dir);
            Assert.Equal(json.VocabSize, legacy.VocabSize);
            Assert.Equal(50256, legacy.EosTokenId);
            int checkedCases = 0;
            foreach (var c in TokenizerGoldenTests.All.Where(c => c.Tokenizer == "gpt2"))
            {
                Assert.Equal(c.Ids, legacy.Encode(c.Text, c.AddSpecialTokens));
                Assert.Equal(c.Decoded, legacy.Decode(c.Ids));
                checkedCases++;
            }
            Assert.Equal(90, checkedCases);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void MetaspacePrependSchemeFirstOnlyPrefixesTheStartOfTheInput()
    {
        string Json(string scheme) => $$"""
            {
              "added_tokens": [{"id": 5, "content": "<s>", "special": true, "lstrip": false, "rstrip": false, "single_word": false, "normalized": false}],
              "normalizer": null,
              "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "{{scheme}}", "split": true},
              "post_processor": null,
              "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "{{scheme}}", "split": true},
              "model": {"type": "BPE", "vocab": {"\u2581a": 0, "b": 1, "\u2581": 2, "a": 3, "\u2581b": 4, "<s>": 5}, "merges": [["\u2581", "a"], ["\u2581", "b"]]}
            }
            """;
        string path = Path.Combine(Path.GetTempPath(), "peftsharp-metaspace-" + Guid.NewGuid().ToString("N") + ".json");
        try
        {
            File.WriteAllText(path, Json("first"), Encoding.UTF8);
            var first = Tokenizer.FromFile(path);
            Assert.Equal([0, 4], first.Encode("a b"));
            Assert.Equal([5, 3, 4], first.Encode("<s>a b"));
            Assert.Equal("a b", first.Decode([0, 4]));
            File.WriteAllText(path, Json("always"), Encoding.UTF8);
            Assert.Equal([5, 0, 4], Tokenizer.FromFile(path).Encode("<s>a b"));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void MissingFilesAndBadJsonAreUserErrors()
    {
        Assert.Throws<FileNotFoundException>(() => Tokenizer.FromFile("/nonexistent/tokenizer.json"));
        string path = Path.Combine(Path.GetTempPath(), "peftsharp-bad-" + Guid.NewGuid().ToString("N") + ".json");
        try
        {
            File.WriteAllText(path, "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
            var e = Assert.Throws<PeftSharpException>(() => Tokenizer.FromFile(path));
            Assert.Contains("Unigram", e.Message);
        }
        finally { File.Delete(path); }
    }
}
