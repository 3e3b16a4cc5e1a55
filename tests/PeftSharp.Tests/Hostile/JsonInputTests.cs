using PeftSharp.Data;
using PeftSharp.Formats;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Hostile;

/// <summary>
/// Issue 19, item 5: duplicate keys, lone surrogates, deep nesting and huge numbers in any JSON input
/// were exit 2 with a stack trace (System.Text.Json threw on first access, outside the handlers). Each is
/// now a <see cref="PeftSharpException"/> naming the file, line and key.
/// </summary>
public sealed class JsonInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-json").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private const string DuplicateModel = "{\"model_type\": \"llama\", \"hidden_size\": 8,\n  \"hidden_size\": 16\n}";

    [Fact]
    public void Duplicate_keys_are_refused_in_every_json_file()
    {
        var cases = new (string File, string Text, Action<string> Load)[]
        {
            ("config.json", DuplicateModel, p => ModelConfig.Load(p)),
            ("generation_config.json", "{\"eos_token_id\": 1,\n\"eos_token_id\": 2}", p => GenerationConfig.Load(p)),
            ("adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 8,\n\"r\": 16}", p => LoraConfig.Load(p)),
            ("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,\n\"a\": 1}, \"merges\": []}}", p => Tokenizer.FromFile(p)),
            ("tokenizer_config.json", "{\"chat_template\": \"x\",\n\"chat_template\": \"y\"}", p => ChatTemplate.FromTokenizerConfig(p)),
        };
        foreach (var (file, text, load) in cases)
        {
            string path = Write(file, text);
            var e = Assert.Throws<PeftSharpException>(() => load(path));
            Assert.Contains(path + ":", e.Message);
            Assert.Contains("duplicate key", e.Message);
            Assert.Contains(":2:", e.Message.Replace(path, ""));
        }
    }

    [Fact]
    public void A_duplicate_key_in_a_data_line_names_the_file_line_and_key()
    {
        var e = Assert.Throws<PeftSharpException>(() =>
            DataFiles.ReadJsonLines("train.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\", \"text\": \"c\"}\n", false, []));
        Assert.StartsWith("train.jsonl:2: duplicate key \"text\"", e.Message);
        var skipped = new List<MalformedRecord>();
        var kept = DataFiles.ReadJsonLines("train.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\", \"text\": \"c\"}\n", true, skipped);
        Assert.Single(kept);
        Assert.Equal(2, Assert.Single(skipped).Line);

        var json = Assert.Throws<PeftSharpException>(() => DataFiles.ReadJson("train.json", "[\n{\"text\": \"a\",\n \"text\": \"b\"}]"));
        Assert.StartsWith("train.json:3: duplicate key \"text\"", json.Message);
    }

    [Fact]
    public void A_duplicate_key_in_a_json_run_config_names_the_file_and_line()
    {
        string path = Write("run.json", "{\"model\": {\"name_or_path\": \"m\"},\n \"lora\": {\"r\": 4,\n \"r\": 8}}");
        var e = Assert.Throws<PeftSharpException>(() => PeftSharp.Config.ConfigTree.LoadFile(path));
        Assert.Equal($"{path}: line 3: duplicate key \"r\" in one JSON object; each key may appear once.", e.Message);
    }

    [Fact]
    public void A_lone_surrogate_is_a_clear_error()
    {
        string path = Write("config.json", "{\"model_type\": \"llama\",\n\"name\": \"\\ud800\"}");
        var e = Assert.Throws<PeftSharpException>(() => ModelConfig.Load(path));
        Assert.Contains($"{path}:2:", e.Message);
        Assert.Contains("lone UTF-16 surrogate", e.Message);
        var line = Assert.Throws<PeftSharpException>(() => DataFiles.ReadJsonLines("d.jsonl", "{\"\\udc00\": 1}", false, []));
        Assert.StartsWith("d.jsonl:1: a key holds an invalid escape", line.Message);
    }

    [Fact]
    public void Huge_numbers_are_errors_naming_the_key()
    {
        string gen = Write("generation_config.json", "{\"eos_token_id\": [12345678901234567890]}");
        var e = Assert.Throws<PeftSharpException>(() => GenerationConfig.Load(gen));
        Assert.Contains("'eos_token_id' must be an integer or a list of integers", e.Message);
        string temp = Write("generation_config.json", "{\"temperature\": 1e400}");
        Assert.Contains("'temperature' must be a finite number", Assert.Throws<PeftSharpException>(() => GenerationConfig.Load(temp)).Message);
        string adapter = Write("adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 1e400}");
        Assert.Contains("r must be an integer", Assert.Throws<PeftSharpException>(() => LoraConfig.Load(adapter)).Message);
    }

    [Fact]
    public void Nesting_past_the_limit_names_it()
    {
        string deep = new string('[', 10_000) + new string(']', 10_000);
        var e = Assert.Throws<PeftSharpException>(() => JsonInput.ParseNode(deep, "x.json"));
        Assert.Contains("x.json:1: JSON nested deeper than the limit of 64 levels", e.Message);
        string ok = new string('[', 60) + new string(']', 60);
        Assert.NotNull(JsonInput.ParseNode(ok, "x.json"));
    }
}
