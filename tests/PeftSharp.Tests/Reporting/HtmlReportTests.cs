using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PeftSharp.Reporting;

namespace PeftSharp.Tests.Reporting;

public class HtmlReportTests
{
    private static ReportData Sample() => new()
    {
        Title = "LoRA <demo>",
        Log = Enumerable.Range(1, 20).Select(s => new JsonObject
        {
            ["step"] = s, ["epoch"] = s / 10.0, ["loss"] = 3.0 / s, ["learning_rate"] = 1e-4 * (1 - s / 20.0),
            ["grad_norm"] = 1.0 + s * 0.01, ["tokens_per_second"] = 900 + s,
        }).Concat([new JsonObject { ["step"] = 10, ["eval_loss"] = 0.5 }, new JsonObject { ["step"] = 20, ["eval_loss"] = 0.25 }]).ToList(),
        Config = new JsonObject { ["lora"] = new JsonObject { ["r"] = 8 } },
        Summary = ["trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797"],
        FinalMetrics = [("bleu", "0.65")],
        Samples = [new("User likes cooking videos", "I", "I recommend 'Pasta Tutorial'", "I recommend 'Pasta Tutorial'")],
    };

    [Fact]
    public void DrawsEveryCurveWithItsPoints()
    {
        var html = HtmlReport.Render(Sample());
        var paths = Regex.Matches(html, "<path class=\"series\" data-series=\"([^\"]+)\" d=\"([^\"]+)\"");
        var bySeries = paths.ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value.Split(' ').Length);
        Assert.Equal(20, bySeries["train loss"]);
        Assert.Equal(2, bySeries["eval loss"]);
        Assert.Equal(20, bySeries["learning rate"]);
        Assert.Equal(20, bySeries["tokens/s"]);
        Assert.Equal(20, bySeries["grad norm"]);
    }

    [Fact]
    public void IsSelfContainedAndEscaped()
    {
        var html = HtmlReport.Render(Sample());
        Assert.DoesNotContain("<script", html);
        Assert.DoesNotContain("src=", html);
        Assert.DoesNotContain("href=", html);
        Assert.Equal(0, Regex.Matches(html, "https?://").Count(m => !html[(m.Index - 7)..m.Index].Contains("xmlns=")));
        Assert.Contains("LoRA &lt;demo&gt;", html);
        Assert.Contains("trainable%: 0.1797", html);
        Assert.Contains("I recommend &#39;Pasta Tutorial&#39;", html);
    }

    [Fact]
    public void EmptyLogSaysNoData()
    {
        var html = HtmlReport.Render(new ReportData { Title = "t" });
        Assert.Equal(4, Regex.Matches(html, "no data").Count);
    }

    [Fact]
    public void MalformedLogLineIsNamed()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllLines(path, ["{\"step\": 1, \"loss\": 2}", "", "{oops"]);
            var e = Assert.Throws<PeftSharpException>(() => HtmlReport.ReadLog(path));
            Assert.Contains(":3:", e.Message);
        }
        finally { File.Delete(path); }
    }
}
