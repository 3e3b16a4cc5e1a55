using System.Text.Json.Nodes;
using Microsoft.Playwright;
using PeftSharp.Reporting;

namespace PeftSharp.Tests.Reporting;

/// <summary>A fact that skips with a clear message where Debian's chromium is not installed.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public static string? Executable { get; } = new[] { Environment.GetEnvironmentVariable("PEFTSHARP_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser" }
        .FirstOrDefault(p => !string.IsNullOrEmpty(p) && File.Exists(p));

    public ChromiumFactAttribute()
    {
        if (Executable == null) Skip = "Chromium not found (apt-get install chromium, or set PEFTSHARP_CHROMIUM); the report render check needs a real browser.";
    }
}

public class ReportRenderTests
{
    [ChromiumFact]
    public async Task ChromiumDrawsTheCurves()
    {
        var dir = Directory.CreateTempSubdirectory("peftsharp-report").FullName;
        try
        {
            var log = Enumerable.Range(1, 30).Select(s => new JsonObject { ["step"] = s, ["loss"] = 4.0 / s, ["learning_rate"] = 2e-4, ["grad_norm"] = 1.0, ["tokens_per_second"] = 1000.0 })
                .Append(new JsonObject { ["step"] = 30, ["eval_loss"] = 0.3 }).ToList();
            var path = HtmlReport.Write(dir, new ReportData { Title = "render check", Log = log });

            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = ChromiumFactAttribute.Executable,
                Headless = true,
                Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
            });
            var page = await browser.NewPageAsync();
            var requests = new List<string>();
            page.Request += (_, r) => requests.Add(r.Url);
            await page.GotoAsync(new Uri(path).AbsoluteUri);

            Assert.Equal(4, await page.Locator("svg.chart").CountAsync());
            var loss = page.Locator("path[data-series='train loss']");
            Assert.Equal(1, await loss.CountAsync());
            var box = await loss.BoundingBoxAsync();
            Assert.NotNull(box);
            Assert.True(box!.Width > 300 && box.Height > 100, $"the loss curve is drawn across the chart (box {box.Width}×{box.Height})");
            var length = await loss.EvaluateAsync<double>("p => p.getTotalLength()");
            Assert.True(length > 300, $"the loss path has length {length}");
            Assert.All(requests, url => Assert.StartsWith("file://", url));
        }
        finally { Directory.Delete(dir, true); }
    }
}
