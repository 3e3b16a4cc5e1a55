using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using PeftSharp.Data;
using PeftSharp.Training.Preference;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// `peftsharp score --model DIR [--adapter DIR] --data FILE`: a sequence classifier's (reward model's) output per example, one
/// JSON line each: {"reward": r} for one label ({"logits": [...]} for more), or {"chosen": r_c, "rejected": r_r} for a pair.
/// A record is scored as "text", or prompt + completion, or prompt + chosen and prompt + rejected.
/// </summary>
public static class ScoreCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (config.json, safetensors, tokenizer).", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "A SEQ_CLS adapter (PEFT format) with its score head." };
        var data = new Option<string>("--data") { Description = "Examples: .jsonl, .json or .csv (text, prompt/completion, or prompt/chosen/rejected).", Required = true };
        var command = new Command("score", "Score examples with a reward model (sequence classifier); prints JSON lines.") { model, adapter, data };
        command.SetAction(r => Run(r.GetValue(model)!, r.GetValue(adapter), r.GetValue(data)!, Console.Out));
        return command;
    }

    public static void Run(string modelDir, string? adapterDir, string dataFile, TextWriter output)
    {
        using var model = RewardModel.Load(modelDir, adapterDir);
        var skipped = new List<MalformedRecord>();
        var records = DataFiles.Read(dataFile, "text", PlainTextMode.Lines, false, skipped);
        float[] Score(string text) => model.Score(text);
        JsonNode Value(float[] v) => v.Length == 1 ? JsonValue.Create((double)v[0])! : new JsonArray(v.Select(x => (JsonNode)JsonValue.Create((double)x)!).ToArray());
        foreach (var r in records)
        {
            var f = r.Fields;
            string S(string key) => f[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s
                : throw new PeftSharpException($"{r.Where}: field \"{key}\" must be a string (score takes text, prompt/completion or prompt/chosen/rejected).");
            var line = new JsonObject();
            string prompt = f.ContainsKey("prompt") ? S("prompt") : "";
            if (f.ContainsKey("chosen") && f.ContainsKey("rejected"))
            {
                line["chosen"] = Value(Score(prompt + S("chosen")));
                line["rejected"] = Value(Score(prompt + S("rejected")));
            }
            else
            {
                var v = Score(f.ContainsKey("completion") ? prompt + S("completion") : S("text"));
                line[v.Length == 1 ? "reward" : "logits"] = Value(v);
            }
            output.WriteLine(line.ToJsonString());
        }
    }
}
