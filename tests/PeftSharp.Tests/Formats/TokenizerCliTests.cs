using System.CommandLine;
using System.Text.Json;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;

namespace PeftSharp.Tests.Formats;

public class TokenizerCliTests
{
    [AssetFact]
    public void TokenizeWritesIdsAndDecodedTextPerLine()
    {
        var llama2 = TokenizerGoldenTests.Get("llama2");
        var input = new StringReader("{\"text\": \"Hello world!\"}\n\n{\"text\": \"caf\\u00e9 \\\"q\\\"\"}\n");
        var output = new StringWriter();
        TokenizeCommand.Run(llama2, input, output, addSpecialTokens: true);
        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        string[] texts = ["Hello world!", "café \"q\""];
        for (int i = 0; i < 2; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            var ids = doc.RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            Assert.Equal(llama2.Encode(texts[i]), ids);
            Assert.Equal(1, ids[0]);
            Assert.Equal(llama2.Decode(ids), doc.RootElement.GetProperty("decoded").GetString());
        }
    }

    [AssetFact]
    public void MalformedLineNamesItsNumber()
    {
        var gpt2 = TokenizerGoldenTests.Get("gpt2");
        var input = new StringReader("{\"text\": \"ok\"}\n{\"text\": 3}\n");
        var e = Assert.Throws<PeftSharpException>(() => TokenizeCommand.Run(gpt2, input, new StringWriter(), true));
        Assert.Contains("line 2", e.Message);
        e = Assert.Throws<PeftSharpException>(() => TokenizeCommand.Run(gpt2, new StringReader("not json"), new StringWriter(), true));
        Assert.Contains("line 1", e.Message);
    }

    [Fact]
    public void MissingTokenizerFolderExitsWithUserError()
    {
        var root = new RootCommand();
        root.Subcommands.Add(TokenizeCommand.Create());
        var error = new StringWriter();
        int code = CliRunner.Run(root, ["tokenize", "--tokenizer", "/nonexistent/tokenizer-dir"], error);
        Assert.Equal(CliRunner.UserError, code);
        Assert.Contains("/nonexistent/tokenizer-dir", error.ToString());
    }
}
