using System.Text.Json.Nodes;
using PeftSharp.Formats;

namespace PeftSharp.Tests.Formats;

public class PythonJsonTests
{
    [Theory]
    [InlineData(0.0, "0.0")]
    [InlineData(0.05, "0.05")]
    [InlineData(1.0, "1.0")]
    [InlineData(16.0, "16.0")]
    [InlineData(1e-05, "1e-05")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(2e-4, "0.0002")]
    [InlineData(5e-5, "5e-05")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1234567890123456.0, "1234567890123456.0")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(0.1 + 0.2, "0.30000000000000004")]
    [InlineData(1.5e-10, "1.5e-10")]
    [InlineData(123.456, "123.456")]
    public void FloatsPrintAsPythonRepr(double value, string expected) =>
        Assert.Equal(expected, PythonJson.FormatFloat(value));

    [Fact]
    public void MatchesJsonDumpsIndent2SortKeys()
    {
        // json.dumps({"b": [1, "x\u00e9"], "a": {}, "c": {"z": None, "y": []}, "d": True, "e": 0.5}, indent=2, sort_keys=True)
        var node = JsonNode.Parse("""{"b": [1, "xé"], "a": {}, "c": {"z": null, "y": []}, "d": true, "e": 0.5}""");
        const string expected = "{\n  \"a\": {},\n  \"b\": [\n    1,\n    \"x\\u00e9\"\n  ],\n  \"c\": {\n    \"y\": [],\n    \"z\": null\n  },\n  \"d\": true,\n  \"e\": 0.5\n}";
        Assert.Equal(expected, PythonJson.Serialize(node));
    }
}
