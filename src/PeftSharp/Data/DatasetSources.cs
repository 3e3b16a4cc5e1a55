using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using PeftSharp.Config;
using PeftSharp.Formats;

namespace PeftSharp.Data;

/// <summary>A dataset found on disk: its folder, the config chosen, and the data files of each split.</summary>
public sealed record ResolvedDataset(string Folder, string? Config, IReadOnlyDictionary<string, IReadOnlyList<string>> Splits, string How)
{
    public IReadOnlyList<string> SplitNames => Splits.Keys.ToList();

    /// <summary>The files of <paramref name="split"/>; an unknown split lists the available ones.</summary>
    public IReadOnlyList<string> Files(string split, string key)
    {
        if (Splits.TryGetValue(split, out var files)) return files;
        throw new PeftSharpException($"data.{key}: dataset {Folder}{(Config != null ? $" (config \"{Config}\")" : "")} has no split \"{split}\"." +
            $"{Suggestions.DidYouMean(split, Splits.Keys)} Available splits: {string.Join(", ", Splits.Keys)}.");
    }
}

/// <summary>
/// Finds a dataset as `datasets.load_dataset(name, config)` does, offline: <c>name</c> is a local folder, or a hub id
/// ORG/NAME found in the Hugging Face cache (datasets--ORG--NAME/snapshots/REV, REV from refs/main; the cache folder as
/// transformers resolves it: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub). In the folder:
/// <list type="bullet">
/// <item>a `save_to_disk` folder: dataset_dict.json with one folder per split, or a single dataset (state.json, split "train");</item>
/// <item>a dataset card (README.md) whose YAML front matter lists <c>configs:</c>, each with <c>data_files</c> patterns per split;
/// the config named by <c>dataset_config</c>, else the one marked <c>default: true</c> or named "default", else the only one;</item>
/// <item>otherwise the layout `datasets` infers: data/{split}-NNNNN-of-NNNNN.*, then file or folder names holding a split keyword
/// (train/training, validation/valid/dev/val, test/testing/eval/evaluation, between non-word characters), else every data file is "train".</item>
/// </list>
/// </summary>
public static class DatasetSources
{
    public static readonly string[] DataExtensions = [".parquet", ".arrow", ".jsonl", ".ndjson", ".json", ".csv", ".txt"];

    private static readonly (string Split, string[] Keywords)[] SplitKeywords =
    [
        ("train", ["train", "training"]),
        ("validation", ["validation", "valid", "dev", "val"]),
        ("test", ["test", "testing", "eval", "evaluation"]),
    ];

    public static ResolvedDataset Resolve(string name, string? config, Func<string, string?>? environment = null)
    {
        string folder = FindFolder(name, environment);
        string dictFile = Path.Combine(folder, "dataset_dict.json");
        if (File.Exists(dictFile)) return NoConfig(SaveToDiskDict(folder, dictFile), config, folder);
        if (File.Exists(Path.Combine(folder, "state.json")))
            return NoConfig(new ResolvedDataset(folder, null, new Dictionary<string, IReadOnlyList<string>> { ["train"] = SaveToDiskFiles(folder) }, "a save_to_disk dataset"), config, folder);

        var card = Path.Combine(folder, "README.md");
        var configs = File.Exists(card) ? CardConfigs(card) : null;
        if (configs is { Count: > 0 })
        {
            var chosen = ChooseConfig(configs, config, folder);
            var splits = new Dictionary<string, IReadOnlyList<string>>();
            foreach (var (split, patterns) in chosen.DataFiles)
            {
                var files = Match(folder, patterns);
                if (files.Count == 0)
                    throw new PeftSharpException($"{card}: config \"{chosen.Name}\" split \"{split}\": no file matches {string.Join(", ", patterns.Select(p => $"'{p}'"))} in {folder}.");
                splits[split] = files;
            }
            return new ResolvedDataset(folder, chosen.Name, splits, $"config \"{chosen.Name}\" of the dataset card");
        }
        var inferred = Infer(folder);
        if (inferred.Count == 0)
            throw new PeftSharpException($"{folder}: no data files ({string.Join(", ", DataExtensions)}) and no dataset card with configs.");
        return NoConfig(new ResolvedDataset(folder, null, inferred, "the file layout"), config, folder);
    }

    private static ResolvedDataset NoConfig(ResolvedDataset d, string? config, string folder)
    {
        if (!string.IsNullOrEmpty(config) && config != "default")
            throw new PeftSharpException($"data.dataset_config: \"{config}\" given, but {folder} has no configs (no dataset card with configs:); remove dataset_config.");
        return d;
    }

    /// <summary>A local folder, else ORG/NAME (or NAME) in the hub cache.</summary>
    public static string FindFolder(string name, Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string local = Path.GetFullPath(name.StartsWith("~/", StringComparison.Ordinal) && environment("HOME") is { } home ? Path.Combine(home, name[2..]) : name);
        if (Directory.Exists(local)) return local;
        var looked = new List<string> { $"local folder {local} (does not exist)" };
        if (ModelFolder.IsHubId(name) || (!name.Contains('/') && !name.Contains('\\') && !name.Contains('.')))
        {
            var (cache, origin) = ModelFolder.HubCache(environment);
            string repo = Path.Combine(cache, "datasets--" + name.Replace("/", "--", StringComparison.Ordinal));
            var snapshot = ModelFolder.Snapshot(repo, out string why);
            if (snapshot != null) return snapshot;
            looked.Add($"Hugging Face cache {repo} ({origin}): {why}");
        }
        throw new PeftSharpException($"data.dataset_name: dataset '{name}' not found. Looked in:\n" + string.Concat(looked.Select(l => $"  - {l}\n")) +
            $"Download it with `huggingface-cli download --repo-type dataset {name}` (the hub cache) or pass a local folder.");
    }

    private sealed record CardConfig(string Name, bool Default, List<(string Split, List<string> Patterns)> DataFiles);

    private static List<CardConfig>? CardConfigs(string card)
    {
        string text = File.ReadAllText(card).Replace("\r\n", "\n");
        if (!text.StartsWith("---\n", StringComparison.Ordinal)) return null;
        int end = text.IndexOf("\n---", 4, StringComparison.Ordinal);
        if (end < 0) throw new PeftSharpException($"{card}: the YAML front matter opened by '---' is not closed by a '---' line.");
        JsonObject meta;
        try { meta = ConfigTree.ParseYaml(text[4..(end + 1)]); }
        catch (PeftSharpException e) { throw new PeftSharpException($"{card}: front matter: {e.Message}"); }
        if (meta["configs"] is not JsonArray list) return meta.ContainsKey("configs") ? throw Bad(card, "configs", "a list of {config_name, data_files}") : null;
        var configs = new List<CardConfig>();
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] is not JsonObject c || c["config_name"]?.ToString() is not { Length: > 0 } configName)
                throw Bad(card, $"configs[{i}]", "a mapping with a config_name");
            var dataFiles = new List<(string, List<string>)>();
            switch (c["data_files"])
            {
                case null: throw Bad(card, $"configs[{i}] ({configName}).data_files", "patterns per split (PeftSharp reads data_files only)");
                case JsonValue v: dataFiles.Add(("train", [v.ToString()])); break;
                case JsonArray a when a.All(x => x is JsonValue): dataFiles.Add(("train", a.Select(x => x!.ToString()).ToList())); break;
                case JsonArray a:
                    for (int k = 0; k < a.Count; k++)
                    {
                        if (a[k] is not JsonObject entry || entry["split"]?.ToString() is not { Length: > 0 } split)
                            throw Bad(card, $"configs[{i}] ({configName}).data_files[{k}]", "{split, path}");
                        var path = entry["path"] switch
                        {
                            JsonValue pv => [pv.ToString()],
                            JsonArray pa => pa.Select(x => x!.ToString()).ToList(),
                            _ => throw Bad(card, $"configs[{i}] ({configName}).data_files[{k}].path", "a pattern or a list of patterns"),
                        };
                        dataFiles.Add((split, path));
                    }
                    break;
                case JsonObject o:
                    foreach (var (split, p) in o)
                        dataFiles.Add((split, p is JsonArray pa ? pa.Select(x => x!.ToString()).ToList() : [p!.ToString()]));
                    break;
            }
            foreach (var (key, _) in c)
                if (key is not ("config_name" or "data_files" or "default" or "data_dir"))
                    throw new PeftSharpException($"{card}: configs[{i}] ({configName}) sets \"{key}\", which PeftSharp does not implement (it reads config_name, data_files and default).");
            if (c["data_dir"] is JsonValue dir)
                dataFiles = dataFiles.Select(d => (d.Item1, d.Item2.Select(p => dir.ToString().TrimEnd('/') + "/" + p).ToList())).ToList();
            configs.Add(new CardConfig(configName, c["default"] is JsonValue dv && dv.ToString() is "true" or "True", dataFiles));
        }
        return configs;
    }

    private static PeftSharpException Bad(string card, string key, string expected) =>
        new($"{card}: front matter {key}: expected {expected}.");

    private static CardConfig ChooseConfig(List<CardConfig> configs, string? config, string folder)
    {
        var names = configs.Select(c => c.Name).ToList();
        if (!string.IsNullOrEmpty(config))
            return configs.FirstOrDefault(c => c.Name == config)
                ?? throw new PeftSharpException($"data.dataset_config: {folder} has no config \"{config}\".{Suggestions.DidYouMean(config, names)} Available configs: {string.Join(", ", names)}.");
        var chosen = configs.FirstOrDefault(c => c.Default) ?? configs.FirstOrDefault(c => c.Name == "default") ?? (configs.Count == 1 ? configs[0] : null);
        return chosen ?? throw new PeftSharpException($"data.dataset_config is missing: {folder} has several configs; pick one of {string.Join(", ", names)}.");
    }

    /// <summary>Files under <paramref name="folder"/> matching any pattern (fsspec glob: * and ? within a name, ** across folders), sorted.</summary>
    public static List<string> Match(string folder, IEnumerable<string> patterns)
    {
        var regexes = patterns.Select(GlobRegex).ToList();
        return AllFiles(folder).Where(rel => regexes.Any(r => r.IsMatch(rel))).Select(rel => Path.Combine(folder, rel)).ToList();
    }

    /// <summary>Relative paths with '/' of the visible files under a folder (no dot- or double-underscore names), in ordinal order.</summary>
    private static List<string> AllFiles(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f).Replace('\\', '/'))
            .Where(rel => rel.Split('/').All(part => !part.StartsWith('.') && !part.StartsWith("__", StringComparison.Ordinal)))
            .OrderBy(rel => rel, StringComparer.Ordinal).ToList();

    internal static Regex GlobRegex(string pattern)
    {
        var sb = new System.Text.StringBuilder("^");
        string p = pattern.Replace('\\', '/').TrimStart('/');
        if (p.StartsWith("./", StringComparison.Ordinal)) p = p[2..];
        for (int i = 0; i < p.Length; i++)
        {
            char c = p[i];
            if (c == '*' && i + 1 < p.Length && p[i + 1] == '*')
            {
                bool slash = i + 2 < p.Length && p[i + 2] == '/';
                sb.Append(slash ? "(?:.*/)?" : ".*");
                i += slash ? 2 : 1;
            }
            else if (c == '*') sb.Append("[^/]*");
            else if (c == '?') sb.Append("[^/]");
            else if (c == '[')
            {
                int close = p.IndexOf(']', i + 1);
                if (close < 0) { sb.Append("\\["); continue; }
                string body = p[(i + 1)..close];
                sb.Append('[').Append(body.StartsWith('!') ? "^" + Regex.Escape(body[1..]) : Regex.Escape(body).Replace("\\-", "-")).Append(']');
                i = close;
            }
            else sb.Append(Regex.Escape(c.ToString()));
        }
        return new Regex(sb.Append('$').ToString(), RegexOptions.CultureInvariant);
    }

    private static Dictionary<string, IReadOnlyList<string>> Infer(string folder)
    {
        var files = AllFiles(folder).Where(rel => DataExtensions.Contains(Path.GetExtension(rel).ToLowerInvariant())).ToList();
        var result = new Dictionary<string, IReadOnlyList<string>>();
        // data/{split}-00000-of-00001.parquet: the layout the Hub's Parquet conversion and push_to_hub write, any split name.
        var sharded = new Regex(@"^data/([^/]+?)-\d{5}-of-\d{5}[^/]*\.[^/]+$");
        foreach (var group in files.Select(f => (f, m: sharded.Match(f))).Where(x => x.m.Success).GroupBy(x => x.m.Groups[1].Value))
            result[group.Key] = group.Select(x => Path.Combine(folder, x.f)).ToList();
        if (result.Count > 0) return result;
        foreach (bool inDirectory in new[] { false, true })
        {
            foreach (var (split, keywords) in SplitKeywords)
            {
                var regex = new Regex($@"(^|[-._ 0-9])({string.Join("|", keywords)})([-._ 0-9]|$)", RegexOptions.IgnoreCase);
                var matched = files.Where(rel =>
                {
                    var parts = rel.Split('/');
                    return inDirectory ? parts[..^1].Any(d => regex.IsMatch(d)) : regex.IsMatch(parts[^1]);
                }).Select(rel => Path.Combine(folder, rel)).ToList();
                if (matched.Count > 0) result[split] = matched;
            }
            if (result.Count > 0) return result;
        }
        if (files.Count > 0) result["train"] = files.Select(f => Path.Combine(folder, f)).ToList();
        return result;
    }

    private static ResolvedDataset SaveToDiskDict(string folder, string dictFile)
    {
        JsonNode? json;
        try { json = JsonNode.Parse(File.ReadAllText(dictFile)); }
        catch (System.Text.Json.JsonException e) { throw new PeftSharpException($"{dictFile}: not valid JSON ({e.Message}).", e); }
        if (json?["splits"] is not JsonArray splits)
            throw new PeftSharpException($"{dictFile}: expected {{\"splits\": [...]}} as datasets' DatasetDict.save_to_disk writes.");
        var result = new Dictionary<string, IReadOnlyList<string>>();
        foreach (var s in splits)
        {
            string split = s!.ToString();
            result[split] = SaveToDiskFiles(Path.Combine(folder, split));
        }
        return new ResolvedDataset(folder, null, result, "a save_to_disk DatasetDict");
    }

    /// <summary>The Arrow files of one save_to_disk dataset, from state.json's _data_files.</summary>
    private static List<string> SaveToDiskFiles(string folder)
    {
        string state = Path.Combine(folder, "state.json");
        if (!File.Exists(state)) throw new PeftSharpException($"{folder}: no state.json; expected a folder written by datasets' save_to_disk.");
        JsonNode? json;
        try { json = JsonNode.Parse(File.ReadAllText(state)); }
        catch (System.Text.Json.JsonException e) { throw new PeftSharpException($"{state}: not valid JSON ({e.Message}).", e); }
        if (json?["_data_files"] is not JsonArray files || files.Count == 0)
            throw new PeftSharpException($"{state}: expected \"_data_files\": [{{\"filename\": \"data-00000-of-00001.arrow\"}}, ...].");
        var paths = new List<string>();
        for (int i = 0; i < files.Count; i++)
        {
            string? name = files[i]?["filename"]?.ToString();
            if (string.IsNullOrEmpty(name) || name.Contains('/') || name.Contains('\\'))
                throw new PeftSharpException($"{state}: _data_files[{i}].filename must be a file name in the folder.");
            string path = Path.Combine(folder, name);
            if (!File.Exists(path)) throw new PeftSharpException($"{state}: _data_files[{i}] names {name}, which is missing from {folder}.");
            paths.Add(path);
        }
        return paths;
    }
}
