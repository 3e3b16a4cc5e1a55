using System.Text.Json.Nodes;
using PeftSharp.Training.Rl;

namespace PeftSharp.Tests.Training.Rl;

public sealed class RewardsTests
{
    private static double Score(string spec, string completion, string row = """{"answer": "42"}""", int tokens = 5) =>
        Rewards.Parse([spec])[0].Score([new RewardInput("Q:", completion, tokens, (JsonObject)JsonNode.Parse(row)!)])[0];

    /// <summary>Runs <paramref name="test"/>(folder, path of a schema file in it) in a temporary folder, deleted afterwards.</summary>
    private static void InSchemaFolder(Action<string, string> test)
    {
        string dir = Directory.CreateTempSubdirectory("peftsharp-schema-").FullName;
        try { test(dir, Path.Combine(dir, "answer.schema.json")); }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void JsonWithASchemaRewardsOnlyValidDocuments() => InSchemaFolder((dir, schema) =>
    {
        File.WriteAllText(schema, """
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["answer"],
             "properties": {"answer": {"type": "integer", "minimum": 0}}}
            """);
        Assert.Equal(1, Score("json:" + schema, """ {"answer": 3} """));
        Assert.Equal(1, Score("json:" + schema, """{"answer": 4, "why": "counted"}"""));
        Assert.Equal(0, Score("json:" + schema, """{"answer": "3"}"""));     // a string, not an integer
        Assert.Equal(0, Score("json:" + schema, """{"answer": -1}"""));      // below the minimum
        Assert.Equal(0, Score("json:" + schema, """{"reply": 3}"""));        // answer missing
        Assert.Equal(0, Score("json:" + schema, "the answer is 3"));          // not JSON
        Assert.Equal(1, Score("json", """{"reply": 3}"""));                 // without a schema: any JSON

        string bad = Path.Combine(dir, "bad.json");
        File.WriteAllText(bad, "{ not json");
        var e = Assert.Throws<PeftSharpException>(() => Rewards.Parse(["json:" + bad]));
        Assert.Contains("not a JSON Schema", e.Message);
        e = Assert.Throws<PeftSharpException>(() => Rewards.Parse(["json:" + Path.Combine(dir, "missing.json")]));
        Assert.Contains("no such schema file", e.Message);
    });

    [Fact]
    public void ASchemaWithItsOwnIdLoadsAgainInTheSameProcess() => InSchemaFolder((_, schema) =>
    {
        // A second run in one process (or a schema file edited between runs) must not be refused as a registry overwrite.
        File.WriteAllText(schema, """
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/answer.schema.json",
             "type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}
            """);
        Assert.Equal(1, Score("json:" + schema, """{"answer": 3}"""));
        Assert.Equal(1, Score("json:" + schema, """{"answer": 3}"""));
        File.WriteAllText(schema, """
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/answer.schema.json",
             "type": "object", "required": ["answer"], "properties": {"answer": {"$ref": "#/$defs/text"}},
             "$defs": {"text": {"type": "string"}}}
            """);
        Assert.Equal(0, Score("json:" + schema, """{"answer": 3}"""));
        Assert.Equal(1, Score("json:" + schema, """{"answer": "3"}"""));
    });

    [Fact]
    public void ExactMatchComparesNormalisedText()
    {
        Assert.Equal(1, Score("exact_match:answer", "  Paris. ", """{"answer": "paris"}"""));
        Assert.Equal(1, Score("exact_match:answer", "New\n  York!", """{"answer": "new york"}"""));
        Assert.Equal(0, Score("exact_match:answer", "Paris, France", """{"answer": "Paris"}"""));
        Assert.Equal(1, Score("exact_match:answer", "42", """{"answer": 42}"""));
        // A list column holds the acceptable answers: the completion must equal one of them, not merely contain it.
        Assert.Equal(1, Score("exact_match:answers", " I recommend 'Tire Tips'", """{"answers": ["I recommend 'Hill Climbs'", "i recommend 'tire tips'."]}"""));
        Assert.Equal(0, Score("exact_match:answers", " I recommend 'Tire Tips', 'Hill Climbs'", """{"answers": ["I recommend 'Hill Climbs'", "I recommend 'Tire Tips'"]}"""));
        Assert.Equal(0, Score("exact_match:answers", "", """{"answers": []}"""));
    }

    [Fact]
    public void ContainsLooksForTheColumnOrAnyOfItsStrings()
    {
        const string titles = """{"titles": ["Piano Scales Daily", "Left Hand Patterns"]}""";
        Assert.Equal(1, Score("contains:titles", " I recommend 'piano scales  daily' today", titles));
        Assert.Equal(1, Score("contains:titles", "Left Hand Patterns", titles));
        Assert.Equal(0, Score("contains:titles", " I recommend 'Piano Scales'", titles));
        Assert.Equal(1, Score("contains:answer", "it is 42 or so"));
        Assert.Equal(0, Score("contains:answer", "forty-two"));
        Assert.Equal(0, Score("contains:answer", "anything", """{"answer": ""}"""));
    }

    [Fact]
    public void NumericTakesTheLastBoxedOrTheLastNumber()
    {
        Assert.Equal(1, Score("numeric:answer", "6 times 7 is 42"));
        Assert.Equal(0, Score("numeric:answer", "42 is not it, 41 is"));
        Assert.Equal(1, Score("numeric:answer", @"so \boxed{42} and then 7"));
        Assert.Equal(1, Score("numeric:answer", @"\boxed{\frac{84}{2}} no: \boxed{4{,}2} hmm \boxed{42.0}"));
        Assert.Equal(1, Score("numeric:answer", "total: 1,234", """{"answer": "#### 1234"}"""));
        Assert.Equal(1, Score("numeric:answer", "-0.5", """{"answer": -0.5}"""));
        Assert.Equal(0, Score("numeric:answer", "no number"));
        Assert.Equal(42, Rewards.ExtractNumber(@"\boxed{x = 42}"));
        Assert.Null(Rewards.ExtractNumber("none"));
    }

    [Fact]
    public void RegexJsonAndLength()
    {
        Assert.Equal(1, Score(@"regex:^<think>.*</think>\s*<answer>.*</answer>$", "<think>a\nb</think>\n<answer>4</answer>"));
        Assert.Equal(0, Score(@"regex:^<think>.*</think>$", "x<think>a</think>"));
        Assert.Equal(1, Score("json", """ {"a": [1, 2]} """));
        Assert.Equal(1, Score("json", "3"));
        Assert.Equal(0, Score("json", """{"a": 1"""));
        Assert.Equal(0, Score("json", "   "));
        Assert.Equal(0, Score("length:10", "x", tokens: 10));
        Assert.Equal(-0.5, Score("length:10", "x", tokens: 15));
    }

    [Fact]
    public void NamesAreUniqueAndBadSpecsAreRefusedByName()
    {
        var funcs = Rewards.Parse(["json", "regex:a", "regex:b"]);
        Assert.Equal(["json", "regex", "regex_2"], funcs.Select(f => f.Name));
        Assert.Contains("exact_match", Assert.Throws<PeftSharpException>(() => Rewards.Parse(["exact_matc:x"])).Message);
        Assert.Contains("column", Assert.Throws<PeftSharpException>(() => Rewards.Parse(["numeric"])).Message);
        Assert.Contains("does not compile", Assert.Throws<PeftSharpException>(() => Rewards.Parse(["regex:("])).Message);
        Assert.Contains("no column \"answer\"", Assert.Throws<PeftSharpException>(() => Score("numeric:answer", "1", "{}")).Message);
        var custom = Rewards.FromFunc("short", r => r.Completion.Length < 3 ? 1 : 0);
        Assert.Equal(new double[] { 1, 0 }, custom.Score([new("p", "ab", 1, []), new("p", "abcd", 2, [])]));
    }
}
