using System.CommandLine;
using System.Text.Json.Nodes;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Models.Init;

namespace PeftSharp.Tests.Hostile;

/// <summary>
/// Issue 19, item 5: 256 inputs gave exit 2 and a stack trace instead of a clear error. A small systematic
/// corpus reproduces that class through the CLI: every key of a config.json duplicated, or its value made a
/// lone surrogate, a 20-digit integer or 1e400 (`inspect`), the same for every value of a run config (`train`),
/// and the file system refusing a write. Each must be exit 1 with the file named; exit 2 stays for bugs.
/// </summary>
public sealed class CliExitCodeTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-exit").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    private static (int Code, string Error) Cli(Command command, params string[] args)
    {
        var root = new RootCommand();
        root.Subcommands.Add(command);
        var error = new StringWriter();
        int code = CliRunner.Run(root, args, error);
        return (code, error.ToString());
    }

    private static readonly string[] Hostile = ["\"\\ud800\"", "12345678901234567890", "1e400"];

    [Fact]
    public void Hostile_config_json_values_are_user_errors_naming_the_file()
    {
        string model = Path.Combine(_root, "model");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "llama", Preset = "tiny", ConfigOnly = true });
        string configPath = Path.Combine(model, "config.json");
        string original = File.ReadAllText(configPath);
        var keys = ((JsonObject)JsonNode.Parse(original)!).Select(kv => kv.Key).ToList();
        var failures = new List<string>();
        int cases = 0;
        foreach (var key in keys)
        {
            // The key twice, then each hostile value in its place.
            var variants = new List<string> { original.Replace($"\"{key}\":", $"\"{key}\": null, \"{key}\":") };
            foreach (var value in Hostile)
            {
                var obj = (JsonObject)JsonNode.Parse(original)!;
                obj[key] = "@@";
                variants.Add(obj.ToJsonString().Replace("\"@@\"", value));
            }
            foreach (var text in variants)
            {
                cases++;
                File.WriteAllText(configPath, text);
                var (code, error) = Cli(InspectCommand.Create(), "inspect", "--model", model);
                if (code == CliRunner.Ok) continue; // a value the model does not read (e.g. a string key given 1e400 is still refused elsewhere)
                if (code != CliRunner.UserError || !error.Contains(configPath))
                    failures.Add($"{key} = {text[..Math.Min(80, text.Length)]}: exit {code}: {error[..Math.Min(300, error.Length)]}");
            }
        }
        Assert.True(cases >= 80, $"only {cases} cases");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void Hostile_run_config_values_are_user_errors()
    {
        string data = Path.Combine(_root, "data.jsonl");
        File.WriteAllText(data, "{\"text\": \"hello\"}\n");
        string[] lines =
        [
            "model:", "  name_or_path: missing-model", "lora:", "  r: 4", "  lora_alpha: 8", "  lora_dropout: 0.1", "  target_modules: [q_proj]",
            "data:", "  train_file: data.jsonl", "  max_length: 32", "training:", "  output_dir: out", "  learning_rate: 2.0e-4",
            "  num_train_epochs: 1", "  warmup_steps: 2", "  per_device_train_batch_size: 2", "  save_total_limit: 2",
        ];
        string[] values = ["1e400", "\"\\ud800\"", "&a [*a]", "12345678901234567890", "-1e400"];
        var failures = new List<string>();
        int cases = 0;
        string path = Path.Combine(_root, "run.yaml");
        for (int i = 0; i < lines.Length; i++)
        {
            if (!lines[i].StartsWith("  ", StringComparison.Ordinal)) continue;
            int colon = lines[i].IndexOf(": ", StringComparison.Ordinal);
            var variants = values.Select(v => lines[i][..(colon + 2)] + v).Append(lines[i] + "\n" + lines[i]);
            foreach (var variant in variants)
            {
                cases++;
                File.WriteAllText(path, string.Join("\n", lines.Take(i).Append(variant).Concat(lines.Skip(i + 1))));
                var (code, error) = Cli(TrainCommand.Create(), "train", path);
                if (code != CliRunner.UserError || error.Contains("   at "))
                    failures.Add($"line {i + 1} '{variant}': exit {code}: {error[..Math.Min(300, error.Length)]}");
            }
        }
        Assert.True(cases >= 60, $"only {cases} cases");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void The_file_system_refusing_is_a_user_error_and_a_bug_stays_exit_2()
    {
        Command Throwing(Exception e)
        {
            var command = new Command("save");
            command.SetAction(new Func<ParseResult, int>(_ => throw e));
            return command;
        }
        var full = Cli(Throwing(new IOException("No space left on device : '/data/out/adapter_model.safetensors'")), "save");
        Assert.Equal((CliRunner.UserError, "error: No space left on device : '/data/out/adapter_model.safetensors'"), (full.Code, full.Error.Trim()));
        var denied = Cli(Throwing(new UnauthorizedAccessException("Access to the path '/data/out' is denied.")), "save");
        Assert.Equal(CliRunner.UserError, denied.Code);
        Assert.Contains("/data/out", denied.Error);
        var wrapped = Cli(Throwing(new AggregateException(new PeftSharpException("bad line"))), "save");
        Assert.Equal((CliRunner.UserError, "error: bad line"), (wrapped.Code, wrapped.Error.Trim()));
        var bug = Cli(Throwing(new InvalidOperationException("a bug")), "save");
        Assert.Equal(CliRunner.InternalError, bug.Code);
        Assert.StartsWith("internal error: System.InvalidOperationException: a bug", bug.Error);
    }

    [Fact]
    public void Writing_into_a_path_that_cannot_be_a_folder_is_exit_1_naming_it()
    {
        string model = Path.Combine(_root, "m");
        ModelInitializer.Write(model, new InitModelOptions { Architecture = "llama", Preset = "tiny" });
        string blocker = Path.Combine(_root, "file");
        File.WriteAllText(blocker, "x");
        var (code, error) = Cli(QuantizeCommand.Create(), "quantize", "--model", model, "--out", Path.Combine(blocker, "out"));
        Assert.Equal(CliRunner.UserError, code);
        Assert.Contains(blocker, error);
    }
}
