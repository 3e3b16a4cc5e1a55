using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using PeftSharp.Formats;

namespace PeftSharp.Reporting;

/// <summary>A prompt with the model's output before and after training (and the reference, if any).</summary>
public sealed record SampleGeneration(string Prompt, string? Before, string After, string? Reference);

/// <summary>Everything the run report shows.</summary>
public sealed record ReportData
{
    public required string Title { get; init; }
    /// <summary>The metric log, one object per record (step, epoch, loss, learning_rate, grad_norm, tokens_per_second, eval_loss, ...).</summary>
    public IReadOnlyList<JsonObject> Log { get; init; } = [];
    public JsonObject? Config { get; init; }
    /// <summary>Lines such as PEFT's "trainable params: ... || all params: ... || trainable%: ...".</summary>
    public IReadOnlyList<string> Summary { get; init; } = [];
    /// <summary>Final figures: name → value (eval_loss, perplexity, bleu, rougeL, adapter size...).</summary>
    public IReadOnlyList<(string Name, string Value)> FinalMetrics { get; init; } = [];
    public IReadOnlyList<SampleGeneration> Samples { get; init; } = [];
}

/// <summary>
/// output_dir/report.html: one self-contained file (inline CSS and SVG, no script, no network) with
/// the loss curves, the learning-rate schedule, throughput, gradient norm, the config, parameter
/// counts, final metrics and sample generations.
/// </summary>
public static class HtmlReport
{
    public const string FileName = "report.html";

    public static string Render(ReportData data)
    {
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>").Append(Esc(data.Title)).Append("</title><style>")
          .Append("body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1b1f24;max-width:1200px}")
          .Append("h1{font-size:22px}h2{font-size:17px;margin-top:28px}.charts{display:flex;flex-wrap:wrap;gap:12px}")
          .Append(".chart{background:#fff;border:1px solid #d0d7de;border-radius:6px}.frame{fill:none;stroke:#d0d7de}")
          .Append(".grid{stroke:#eef1f4}.tick{font-size:10px;fill:#57606a}.axis{font-size:11px;fill:#57606a}.title{font-size:13px;font-weight:600}")
          .Append(".legend{font-size:11px}.empty{fill:#8c959f;font-size:12px}table{border-collapse:collapse;margin:8px 0}")
          .Append("td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}")
          .Append("pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto;font-size:12px}.mono{font-family:ui-monospace,monospace}")
          .Append("</style></head><body>");
        sb.Append("<h1>").Append(Esc(data.Title)).Append("</h1>");
        foreach (var line in data.Summary) sb.Append("<p class=\"mono\">").Append(Esc(line)).Append("</p>");

        sb.Append("<h2>Curves</h2><div class=\"charts\">");
        var train = Series(data.Log, "loss");
        var eval = Series(data.Log, "eval_loss");
        sb.Append(SvgChart.Line("Loss", "step", [new("train loss", train, "#0969da"), new("eval loss", eval, "#cf222e")]));
        sb.Append(SvgChart.Line("Learning rate", "step", [new("learning rate", Series(data.Log, "learning_rate"), "#8250df")]));
        sb.Append(SvgChart.Line("Throughput (tokens/s)", "step", [new("tokens/s", Series(data.Log, "tokens_per_second"), "#1a7f37")]));
        sb.Append(SvgChart.Line("Gradient norm (before clipping)", "step", [new("grad norm", Series(data.Log, "grad_norm"), "#bc4c00")]));
        // Preference trainers (reward, DPO, KTO, ORPO) log their reward margins and accuracies.
        if (data.Log.Any(r => r.ContainsKey("rewards/margins") || r.ContainsKey("eval_rewards/margins") || r.ContainsKey("eval_accuracy")))
        {
            sb.Append(SvgChart.Line("Reward margin (chosen − rejected)", "step",
                [new("train", Series(data.Log, "rewards/margins"), "#0969da"), new("eval", Series(data.Log, "eval_rewards/margins"), "#cf222e")]));
            sb.Append(SvgChart.Line("Preference accuracy", "step",
                [new("train", Series(data.Log, "rewards/accuracies"), "#0969da"), new("eval", Series(data.Log, "eval_rewards/accuracies"), "#cf222e"),
                 new("eval (reward model)", Series(data.Log, "eval_accuracy"), "#1a7f37")]));
        }
        sb.Append("</div>");

        if (data.FinalMetrics.Count > 0)
        {
            sb.Append("<h2>Final metrics</h2><table>");
            foreach (var (name, value) in data.FinalMetrics)
                sb.Append("<tr><th>").Append(Esc(name)).Append("</th><td class=\"mono\">").Append(Esc(value)).Append("</td></tr>");
            sb.Append("</table>");
        }

        if (data.Samples.Count > 0)
        {
            bool before = data.Samples.Any(s => s.Before != null), reference = data.Samples.Any(s => s.Reference != null);
            sb.Append("<h2>Sample generations</h2><table><tr><th>prompt</th>");
            if (before) sb.Append("<th>before training</th>");
            sb.Append("<th>after training</th>");
            if (reference) sb.Append("<th>reference</th>");
            sb.Append("</tr>");
            foreach (var s in data.Samples)
            {
                sb.Append("<tr><td class=\"mono\">").Append(Esc(s.Prompt)).Append("</td>");
                if (before) sb.Append("<td class=\"mono\">").Append(Esc(s.Before ?? "")).Append("</td>");
                sb.Append("<td class=\"mono\">").Append(Esc(s.After)).Append("</td>");
                if (reference) sb.Append("<td class=\"mono\">").Append(Esc(s.Reference ?? "")).Append("</td>");
                sb.Append("</tr>");
            }
            sb.Append("</table>");
        }

        if (data.Config != null)
            sb.Append("<h2>Configuration</h2><pre>").Append(Esc(PythonJson.Serialize(data.Config))).Append("</pre>");
        sb.Append("<p class=\"axis\">Made by PeftSharp on ").Append(DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture)).Append(".</p>");
        sb.Append("</body></html>");
        return sb.ToString();
    }

    /// <summary>Writes output_dir/report.html (temp file + rename) and returns its path.</summary>
    public static string Write(string outputDir, ReportData data)
    {
        var path = Path.Combine(outputDir, FileName);
        AtomicFile.WriteAllText(path, Render(data));
        return path;
    }

    /// <summary>Reads a metrics.jsonl log (one JSON object per line; blank lines skipped).</summary>
    public static List<JsonObject> ReadLog(string path)
    {
        var log = new List<JsonObject>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            log.Add(Formats.JsonInput.ParseNode(line, path, firstLine: lineNumber) as JsonObject
                ?? throw new PeftSharpException($"{path}:{lineNumber}: not a JSON object."));
        }
        return log;
    }

    private static List<(double, double)> Series(IReadOnlyList<JsonObject> log, string key)
    {
        var points = new List<(double, double)>();
        foreach (var record in log)
            if (Number(record["step"]) is { } step && Number(record[key]) is { } value)
                points.Add((step, value));
        return points;
    }

    private static double? Number(JsonNode? node) => Config.KeySpec.AsNumber(node);

    private static string Esc(string s) => WebUtility.HtmlEncode(s);
}
