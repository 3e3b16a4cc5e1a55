using System.Diagnostics;
using System.Text;
using PeftSharp.Config;
using PeftSharp.Data;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Peft;
using PeftSharp.Tensors;

namespace PeftSharp.Fuzz;

/// <summary>How one fuzz case ended: accepted, refused with a user error, or a crash (any other exception).</summary>
public enum FuzzVerdict { Accepted, UserError, Crash }

/// <summary>One case: which parser, what the mutation did, and how it ended.</summary>
public sealed record FuzzOutcome(int Index, string Target, string Mutation, FuzzVerdict Verdict, string? ExceptionType, string? Message,
    long AllocatedBytes, double Seconds);

/// <summary>
/// A fixed-seed mutation fuzzer over every parser a downloaded model folder, dataset or config file reaches
/// (issue 19): safetensors, config.json, generation_config.json, tokenizer.json, tokenizer_config.json with its
/// chat template, adapter files, JSONL/JSON/CSV data and YAML run configs. Seeds are written once (a tiny Llama
/// from init-model, an adapter for it, small data files and a run config); case <c>i</c> takes target
/// <c>i % targets</c>, applies 1 to 3 mutations drawn from <c>Random(seed + i)</c> (byte edits, hostile
/// snippets, duplicated keys, replaced values) and runs the parser. Only <see cref="PeftSharpException"/> (and
/// its subclasses) may escape; anything else is a crash. The caller enforces the per-case time limit.
/// Shared by the CI test (a bounded case count) and `PeftSharp.Bench fuzz` (the long run).
/// </summary>
public sealed class FuzzHarness : IDisposable
{
    public static readonly string[] Targets =
        ["safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "adapter_config.json",
         "adapter_model.safetensors", "data.jsonl", "data.json", "data.csv", "run.yaml"];

    /// <summary>Values a hostile file would put anywhere: each once made some parser crash, hang or allocate without bound.</summary>
    private static readonly string[] Snippets =
    [
        "\"\\ud800\"", "\"\\udc00x\"", "12345678901234567890", "-12345678901234567890", "1e400", "-1e400", "-1", "0", "-0", "2147483648",
        "9223372036854775807", "NaN", "Infinity", "null", "true", "\"\"", "[]", "{}", "[[[[[[[[[[[[[[[[[[[[", "]]]]]", "}}}}",
        new string('[', 300), "{\"a\": 1, \"a\": 2}", "\"" + new string('A', 5000) + "\"", "\\u0000", "\u0000", "\uFFFD", "\"\\\"",
        "{{ 2 ** 100000000000 }}", "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "{{ 'a' * 2000000000 }}", "{{ [1] * 1000000000 }}",
        "{{ ([1, 'a'] | sort) }}", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ x | tojson(indent=1000000000) }}", "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}", "{{ " + new string('(', 500),
        "{%", "%}", "{{", "}}", "{% endif %}", "{% for %}", "&a [*a]", "*a", "&a", "x: &a [*a]", "!!binary", "? ", "- ", ": ", "\t",
        "r: 1e400", "learning_rate: 1e6", "warmup_steps: 1e30", "(a+)+$", "(a|aa)+(?=b)", "\\p{", "\"Regex\": \"(a+)+$\"", "\n", "\r\n",
        "\"dtype\": \"F64\"", "\"dtype\": \"U8\"", "\"shape\": [4294967296, 4294967296]", "\"data_offsets\": [0, 18446744073709551615]",
        "\"shape\": [-1]", "\"../../x\"", "\"/etc/passwd\"", "\"\\u2581\"", "😀", "\"type\": \"WordPiece\"", "\"type\": \"Split\"",
    ];

    /// <summary>Valid JSON values with hostile content, for structural mutations that keep the file parseable.</summary>
    private static readonly string[] JsonValues =
    [
        "\"\\ud800\"", "12345678901234567890", "-12345678901234567890", "1e400", "-1e400", "1e30", "-1", "0", "-0", "0.5", "3.5",
        "2147483648", "-2147483649", "9223372036854775807", "null", "true", "false", "\"\"", "[]", "{}", "[1, \"a\"]", "[[1, 2], [3]]",
        "[12345678901234567890]", "{\"content\": 5}", "{\"content\": \"<s>\"}", new string('[', 70) + new string(']', 70),
        new string('[', 40) + new string(']', 40), "\"" + new string('x', 100_000) + "\"", "\"../../x\"", "\"/etc/passwd\"", "\"F64\"",
        "\"BF16\"", "\"{{ 2 ** 100000000000 }}\"", "\"(a+)+$\"", "\"(a|aa)+(?=b)\"", "\"[\"", "\"\\u0000\"", "[0, 18446744073709551615]",
        "[4294967296, 4294967296]", "[-1]", "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a|aa)+(?=b)\"}, \"behavior\": \"Isolated\", \"invert\": false}",
        "{\"type\": \"Unknown\"}", "{\"type\": 5}", "{\"Regex\": 5}",
    ];

    /// <summary>Text inserted into a JSON string (a chat template, a token, a regex).</summary>
    private static readonly string[] StringInserts =
    [
        "{{ 2 ** 100000000000 }}", "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "{{ 'a' * 2000000000 }}", "{{ [1] * 1000000000 }}",
        "{{ ([1, 'a'] | sort) }}", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ messages | tojson(indent=1000000000) }}", "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}", "{{ " + new string('(', 500),
        "{{ messages[0]['content'] * 100000000 }}", "{{ raise_exception('no') }}", "{%", "%}", "{{", "}}", "{% endfor %}", "{{ x.y.z() }}",
        "{{ 1 // 0 }}", "{{ -9223372036854775807 - 2 }}", "{{ messages | map(attribute='x') | list }}", "(a+)+$", "\\", "\ud800", "😀", "\u0000",
    ];

    /// <summary>YAML values with hostile content.</summary>
    private static readonly string[] YamlValues =
    [
        "1e400", "-1e400", "-1", "0", "1e6", "1e30", "2.5", "&a [*a]", "*a", "{a: 1, a: 2}", "''", "~", new string('[', 100), ".inf", ".nan",
        "0x10", "yes", "\"\\ud800\"", "[1, a]", "12345678901234567890", "!!binary AAAA", "|", ">-", "\"../../x\"", "/etc/passwd",
    ];

    private readonly string _root;
    private readonly string _model;
    private readonly Dictionary<string, byte[]> _seeds = new(StringComparer.Ordinal);
    private readonly string _seedPrefix;

    private readonly List<byte[]> _tokenizerSeeds = [];

    /// <summary>
    /// Writes the seeds under <paramref name="workDir"/>. <paramref name="extraTokenizers"/> (tokenizer.json files,
    /// e.g. the real ones of ../shared/assets) join the tiny tokenizer as seeds of the tokenizer.json target.
    /// </summary>
    public FuzzHarness(string workDir, IEnumerable<string>? extraTokenizers = null)
    {
        _root = workDir;
        Directory.CreateDirectory(_root);
        _model = Path.Combine(_root, "seed-model");
        ModelInitializer.Write(_model, new InitModelOptions { Architecture = "llama", Preset = "tiny", Seed = 1 });
        foreach (var name in (string[])["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"])
            _seeds[name] = File.ReadAllBytes(Path.Combine(_model, name));

        string adapter = Path.Combine(_root, "seed-adapter");
        using (var model = CausalLM.Load(_model))
        using (var peft = PeftModel.Wrap(model, new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = TargetModules.AllLinear, InitLoraWeights = "false" }, rng: new Rng(3)))
            peft.SaveAdapter(adapter);
        _seeds["adapter_config.json"] = File.ReadAllBytes(Path.Combine(adapter, LoraConfig.FileName));
        _seeds["adapter_model.safetensors"] = File.ReadAllBytes(Path.Combine(adapter, PeftModel.WeightsFileName));

        string st = Path.Combine(_root, "seed.safetensors");
        SafetensorsWriter.Write(st,
        [
            SafetensorsEntry.FromFloat32("a.weight", [3, 5], Enumerable.Range(0, 15).Select(i => i * 0.25f).ToArray()),
            SafetensorsEntry.FromFloat32("b.bias", [4], [1f, -2f, 3f, -4f]),
            SafetensorsEntry.FromBytes("c.half", DType.BF16, [2, 2], new byte[] { 0, 0x3F, 0, 0x40, 0, 0xC0, 0x80, 0x3F }),
        ]);
        _seeds["safetensors"] = File.ReadAllBytes(st);

        _seeds["data.jsonl"] = Encoding.UTF8.GetBytes(string.Join("\n",
            "{\"prompt\": \"Hello\", \"completion\": \" world\"}",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}",
            "{\"text\": \"plain text line\"}") + "\n");
        _seeds["data.json"] = Encoding.UTF8.GetBytes("[\n  {\"prompt\": \"a\", \"completion\": \"b\"},\n  {\"prompt\": \"c\", \"completion\": \"d\"}\n]\n");
        _seeds["data.csv"] = Encoding.UTF8.GetBytes("prompt,completion\n\"Hello, you\",world\nfoo,\"bar \"\"baz\"\"\"\n");
        _seeds["run.yaml"] = Encoding.UTF8.GetBytes("""
            model:
              name_or_path: seed-model
            lora:
              r: 4
              lora_alpha: 8
              target_modules: [q_proj, v_proj]
              lora_dropout: 0.1
            data:
              train_file: data.jsonl
              test_size: 0.1
              max_length: 64
            training:
              output_dir: out
              learning_rate: 2.0e-4
              num_train_epochs: 1
              per_device_train_batch_size: 2
              warmup_steps: 0.1
              save_total_limit: 2
            """.Replace("\r\n", "\n"));
        _seedPrefix = Path.Combine(_root, "case-");
        _tokenizerSeeds.Add(_seeds["tokenizer.json"]);
        foreach (var file in extraTokenizers ?? []) _tokenizerSeeds.Add(File.ReadAllBytes(file));
    }

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    /// <summary>Runs case <paramref name="index"/> of the corpus drawn from <paramref name="seed"/>.</summary>
    public FuzzOutcome Run(int index, int seed)
    {
        string target = Targets[index % Targets.Length];
        var random = new Random(unchecked(seed * 1_000_003 + index));
        var bytes = (byte[])(target == "tokenizer.json" ? _tokenizerSeeds[random.Next(_tokenizerSeeds.Count)] : _seeds[target]).Clone();
        var mutations = new List<string>();
        int count = 1 + random.Next(3);
        for (int m = 0; m < count; m++) bytes = Mutate(bytes, random, target, mutations);

        string dir = _seedPrefix + index;
        Directory.CreateDirectory(dir);
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: false);
        var clock = Stopwatch.StartNew();
        Exception? error = null;
        try { Parse(target, dir, bytes); }
        catch (Exception e) { error = e; }
        clock.Stop();
        long allocated = GC.GetTotalAllocatedBytes(precise: false) - allocatedBefore;
        try { Directory.Delete(dir, true); } catch (IOException) { }
        var verdict = error == null ? FuzzVerdict.Accepted : error is PeftSharpException ? FuzzVerdict.UserError : FuzzVerdict.Crash;
        return new FuzzOutcome(index, target, string.Join("; ", mutations), verdict, error?.GetType().FullName,
            verdict == FuzzVerdict.Crash ? error!.ToString() : error?.Message, allocated, clock.Elapsed.TotalSeconds);
    }

    private static readonly ChatMessage[] Conversation =
    [
        new("system", "You are helpful."), new("user", "Hi there"), new("assistant", "Hello! How can I help?"), new("user", "Tell me a joke."),
    ];

    private void Parse(string target, string dir, byte[] bytes)
    {
        switch (target)
        {
            case "safetensors":
            {
                string path = Write(dir, "model.safetensors", bytes);
                using var file = SafetensorsFile.Open(path);
                foreach (var t in file.Tensors) t.ToFloat32();
                break;
            }
            case "config.json":
                Write(dir, "config.json", bytes);
                ModelSkeleton.FromConfig(ModelConfig.Load(dir));
                break;
            case "generation_config.json":
                GenerationConfig.Load(Write(dir, "generation_config.json", bytes));
                break;
            case "tokenizer.json":
            {
                var tokenizer = Tokenizer.FromFile(Write(dir, "tokenizer.json", bytes));
                var ids = tokenizer.Encode("Hello world, 123 héllo  \n<|im_start|>user 😀 ");
                tokenizer.Decode(ids);
                break;
            }
            case "tokenizer_config.json":
            {
                File.WriteAllBytes(Path.Combine(dir, "tokenizer.json"), _seeds["tokenizer.json"]);
                Write(dir, "tokenizer_config.json", bytes);
                var template = ChatTemplate.FromTokenizerConfig(dir);
                template.RenderWithSpans(Conversation, true);
                Tokenizer.FromFolder(dir);
                break;
            }
            case "adapter_config.json" or "adapter_model.safetensors":
            {
                File.WriteAllBytes(Path.Combine(dir, LoraConfig.FileName), _seeds["adapter_config.json"]);
                File.WriteAllBytes(Path.Combine(dir, PeftModel.WeightsFileName), _seeds["adapter_model.safetensors"]);
                Write(dir, target, bytes);
                using var model = CausalLM.Load(_model);
                using var peft = PeftModel.FromPretrained(model, dir);
                break;
            }
            case "data.jsonl" or "data.json" or "data.csv":
                DataFiles.Read(Write(dir, target, bytes), "text", PlainTextMode.Lines, skipMalformed: false, []);
                DataFiles.Read(Path.Combine(dir, target), "text", PlainTextMode.Lines, skipMalformed: true, []);
                break;
            case "run.yaml":
                File.WriteAllBytes(Path.Combine(dir, "data.jsonl"), _seeds["data.jsonl"]);
                RunConfig.Load(Write(dir, "run.yaml", bytes));
                break;
            default: throw new ArgumentOutOfRangeException(nameof(target));
        }
    }

    private static string Write(string dir, string name, byte[] bytes)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] Mutate(byte[] input, Random random, string target, List<string> log)
    {
        bool binary = target.EndsWith("safetensors", StringComparison.Ordinal);
        // Binary files: most edits go to the JSON header, where the parsing is.
        int headerEnd = binary && input.Length >= 8 ? (int)Math.Min(input.Length, 8 + BitConverter.ToInt64(input, 0)) : input.Length;
        if (binary && headerEnd <= 8) headerEnd = input.Length;
        int Pos(int limit) => random.Next(Math.Max(1, limit));
        if (!binary && random.Next(2) == 0)
        {
            var structural = target.EndsWith("yaml", StringComparison.Ordinal) ? MutateYaml(input, random, log)
                : target.EndsWith("csv", StringComparison.Ordinal) ? null : MutateJson(input, 0, input.Length, random, log);
            if (structural != null) return structural;
        }
        if (binary && random.Next(2) == 0 && headerEnd > 8)
        {
            var structural = MutateJson(input, 8, headerEnd, random, log);
            if (structural != null) return structural;
        }
        switch (random.Next(binary ? 9 : 8))
        {
            case 0:
            {
                int p = Pos(headerEnd);
                var result = (byte[])input.Clone();
                if (result.Length > 0) result[p] = (byte)random.Next(256);
                log.Add($"byte {p} set");
                return result;
            }
            case 1:
            {
                int p = Pos(input.Length), n = Math.Min(input.Length - p, 1 + random.Next(40));
                log.Add($"delete {n} at {p}");
                return [.. input.AsSpan(0, p), .. input.AsSpan(p + n)];
            }
            case 2:
            {
                int p = Pos(headerEnd), n = Math.Min(input.Length - p, 1 + random.Next(200));
                int at = Pos(headerEnd);
                log.Add($"copy {n} from {p} to {at}");
                return [.. input.AsSpan(0, at), .. input.AsSpan(p, n), .. input.AsSpan(at)];
            }
            case 3:
            {
                int p = Pos(input.Length);
                log.Add($"truncate at {p}");
                return input[..p];
            }
            case 4:
            case 5:
            {
                string snippet = Snippets[random.Next(Snippets.Length)];
                int at = Pos(headerEnd);
                log.Add($"insert snippet {Snippets.AsSpan().IndexOf(snippet)} at {at}");
                return [.. input.AsSpan(0, at), .. Encoding.UTF8.GetBytes(snippet), .. input.AsSpan(at)];
            }
            case 6:
            {
                // Replace one value (after a ':' and up to the next ',', '}' or newline) with a hostile snippet.
                string text = Encoding.UTF8.GetString(input, 0, headerEnd);
                var colons = AllIndexes(text, ':');
                if (colons.Count == 0) goto case 4;
                int c = colons[random.Next(colons.Count)] + 1;
                int end = text.IndexOfAny([',', '}', '\n'], c);
                if (end < 0) end = text.Length;
                string snippet = Snippets[random.Next(Snippets.Length)];
                log.Add($"value at {c} replaced by snippet {Snippets.AsSpan().IndexOf(snippet)}");
                return Splice(input, text, c, end, " " + snippet, headerEnd, binary);
            }
            case 7:
            {
                // Duplicate a key: repeat a `"key": value` pair.
                string text = Encoding.UTF8.GetString(input, 0, headerEnd);
                var colons = AllIndexes(text, ':');
                if (colons.Count == 0) goto case 3;
                int c = colons[random.Next(colons.Count)];
                int start = text.LastIndexOfAny(['{', ',', '\n'], Math.Max(0, c - 1)) + 1;
                int end = text.IndexOfAny([',', '}', '\n'], c);
                if (end < 0) end = text.Length;
                string pair = text[start..end];
                string separator = target.EndsWith("yaml", StringComparison.Ordinal) || target.EndsWith("csv", StringComparison.Ordinal) ? "\n" : ",";
                log.Add($"pair at {start} duplicated");
                return Splice(input, text, end, end, separator + pair, headerEnd, binary);
            }
            default:
            {
                // The 8-byte header length of a safetensors file.
                var result = (byte[])input.Clone();
                long value = random.Next(4) switch { 0 => -1, 1 => long.MaxValue, 2 => input.Length, _ => random.Next(input.Length + 16) };
                BitConverter.GetBytes(value).CopyTo(result, 0);
                log.Add($"header length {value}");
                return result;
            }
        }
    }

    /// <summary>Parses the JSON in input[start..end], replaces one node with a hostile value (or inserts text into one string), writes it back; null when it does not parse.</summary>
    private static byte[]? MutateJson(byte[] input, int start, int end, Random random, List<string> log)
    {
        System.Text.Json.Nodes.JsonNode? root;
        try { root = System.Text.Json.Nodes.JsonNode.Parse(input.AsSpan(start, end - start)); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or ArgumentException) { return null; }
        if (root == null) return null;
        var nodes = new List<(System.Text.Json.Nodes.JsonNode Parent, object Key, System.Text.Json.Nodes.JsonNode? Node)>();
        void Walk(System.Text.Json.Nodes.JsonNode node, int depth)
        {
            if (depth > 20) return;
            if (node is System.Text.Json.Nodes.JsonObject o)
                foreach (var (k, v) in o.ToList()) { nodes.Add((o, k, v)); if (v != null) Walk(v, depth + 1); }
            else if (node is System.Text.Json.Nodes.JsonArray a)
                for (int i = 0; i < a.Count; i++) { nodes.Add((a, i, a[i])); if (a[i] != null) Walk(a[i]!, depth + 1); }
        }
        try
        {
            Walk(root, 0);
            if (nodes.Count == 0) return null;
            var (parent, key, target) = nodes[random.Next(nodes.Count)];
            System.Text.Json.Nodes.JsonNode? replacement;
            if (target is System.Text.Json.Nodes.JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.String && random.Next(2) == 0)
            {
                string text = v.GetValue<string>();
                string insert = StringInserts[random.Next(StringInserts.Length)];
                int at = random.Next(text.Length + 1);
                replacement = System.Text.Json.Nodes.JsonValue.Create(text[..at] + insert + text[at..]);
                log.Add($"string at {key} gets insert {Array.IndexOf(StringInserts, insert)}");
            }
            else
            {
                string value = JsonValues[random.Next(JsonValues.Length)];
                replacement = System.Text.Json.Nodes.JsonNode.Parse(value, documentOptions: new System.Text.Json.JsonDocumentOptions { MaxDepth = 200 });
                log.Add($"node {key} replaced by value {Array.IndexOf(JsonValues, value)}");
            }
            if (parent is System.Text.Json.Nodes.JsonObject po) po[(string)key] = replacement;
            else ((System.Text.Json.Nodes.JsonArray)parent)[(int)key] = replacement;
            var json = Encoding.UTF8.GetBytes(root.ToJsonString(new System.Text.Json.JsonSerializerOptions { MaxDepth = 256, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            if (start == 0) return [.. json, .. input.AsSpan(end)];
            var result = new byte[8 + json.Length + input.Length - end];
            BitConverter.GetBytes((long)json.Length).CopyTo(result, 0);
            json.CopyTo(result, 8);
            input.AsSpan(end).CopyTo(result.AsSpan(8 + json.Length));
            return result;
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or ArgumentException or FormatException) { return null; }
    }

    /// <summary>Replaces the value of one `key: value` line of a YAML file with a hostile value.</summary>
    private static byte[]? MutateYaml(byte[] input, Random random, List<string> log)
    {
        var lines = Encoding.UTF8.GetString(input).Split('\n');
        var candidates = Enumerable.Range(0, lines.Length).Where(i => lines[i].Contains(": ")).ToList();
        if (candidates.Count == 0) return null;
        int line = candidates[random.Next(candidates.Count)];
        int colon = lines[line].IndexOf(": ", StringComparison.Ordinal);
        string value = YamlValues[random.Next(YamlValues.Length)];
        lines[line] = lines[line][..(colon + 2)] + value;
        log.Add($"yaml line {line + 1} value {Array.IndexOf(YamlValues, value)}");
        return Encoding.UTF8.GetBytes(string.Join('\n', lines));
    }

    private static List<int> AllIndexes(string text, char c)
    {
        var list = new List<int>();
        for (int i = text.IndexOf(c); i >= 0; i = text.IndexOf(c, i + 1)) list.Add(i);
        return list;
    }

    /// <summary>Replaces text[start..end] (within the first <paramref name="headerEnd"/> bytes); a safetensors header length is kept in step.</summary>
    private static byte[] Splice(byte[] input, string text, int start, int end, string replacement, int headerEnd, bool binary)
    {
        string edited = text[..start] + replacement + text[end..];
        var head = Encoding.UTF8.GetBytes(edited);
        var result = new byte[head.Length + input.Length - headerEnd];
        head.CopyTo(result, 0);
        input.AsSpan(headerEnd).CopyTo(result.AsSpan(head.Length));
        if (binary && headerEnd > 8 && head.Length >= 8) BitConverter.GetBytes((long)(head.Length - 8)).CopyTo(result, 0);
        return result;
    }
}
