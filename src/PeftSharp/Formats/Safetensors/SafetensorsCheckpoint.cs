using System.Text.Json.Nodes;

namespace PeftSharp.Formats.Safetensors;

/// <summary>
/// A model's weights as one or several safetensors files: a single file, or shards listed by a
/// "*.safetensors.index.json" (its "weight_map" maps tensor names to shard files). Tensors are
/// looked up by name across all shards; every file stays memory-mapped until disposed.
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly SafetensorsFile[] _files;
    private readonly Dictionary<string, SafetensorsTensor> _byName;

    private SafetensorsCheckpoint(string path, SafetensorsFile[] files, Dictionary<string, SafetensorsTensor> byName)
    {
        Path = path;
        _files = files;
        _byName = byName;
    }

    /// <summary>The file or index this checkpoint was opened from.</summary>
    public string Path { get; }

    public IReadOnlyList<SafetensorsFile> Files => _files;
    public int Count => _byName.Count;

    /// <summary>Tensor names, sorted ordinally.</summary>
    public IEnumerable<string> Names => _byName.Keys.Order(StringComparer.Ordinal);

    public IEnumerable<SafetensorsTensor> Tensors => Names.Select(n => _byName[n]);

    public bool Contains(string name) => _byName.ContainsKey(name);

    public bool TryGetTensor(string name, out SafetensorsTensor tensor) => _byName.TryGetValue(name, out tensor!);

    public SafetensorsTensor this[string name] => _byName.TryGetValue(name, out var t)
        ? t
        : throw new PeftSharpException($"{Path}: no tensor named '{name}' ({_byName.Count} tensors in the checkpoint).");

    /// <summary>
    /// Opens a .safetensors file, an index .json, or a folder (model.safetensors.index.json, then
    /// model.safetensors, then a lone *.safetensors). A folder holding only PyTorch pickles is refused
    /// with conversion instructions.
    /// </summary>
    public static SafetensorsCheckpoint Open(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(path)) return Open(FindInFolder(path));
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return OpenIndex(path);
        if (PickleCheckpoint.IsPickleName(path)) throw PickleCheckpoint.Refusal(path);
        var file = SafetensorsFile.Open(path);
        return new SafetensorsCheckpoint(path, [file], file.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal));
    }

    private static string FindInFolder(string folder)
    {
        string index = System.IO.Path.Combine(folder, IndexFileName), single = System.IO.Path.Combine(folder, SingleFileName);
        if (File.Exists(index)) return index;
        if (File.Exists(single)) return single;
        var indexes = Directory.GetFiles(folder, "*.safetensors.index.json");
        if (indexes.Length == 1) return indexes[0];
        var files = Directory.GetFiles(folder, "*.safetensors");
        if (files.Length == 1 && indexes.Length == 0) return files[0];
        var pickles = PickleCheckpoint.FindIn(folder);
        if (files.Length == 0 && indexes.Length == 0 && pickles.Count > 0) throw PickleCheckpoint.Refusal(pickles[0]);
        throw new PeftSharpException(files.Length + indexes.Length == 0
            ? $"{folder}: no safetensors weights (looked for {IndexFileName}, {SingleFileName} and *.safetensors)."
            : $"{folder}: {files.Length} .safetensors files and {indexes.Length} index files but no {IndexFileName} or {SingleFileName}; pass the file to use.");
    }

    private static SafetensorsCheckpoint OpenIndex(string indexPath)
    {
        var keys = new HfConfig.JsonKeys(HfConfig.JsonKeys.ReadFile(indexPath), indexPath);
        var weightMap = keys.ObjectOrNull("weight_map") ?? throw new PeftSharpException($"{indexPath}: no \"weight_map\" object; not a safetensors index.");
        string folder = System.IO.Path.GetDirectoryName(indexPath)!;
        var files = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var byName = new Dictionary<string, SafetensorsTensor>(weightMap.Count, StringComparer.Ordinal);
        try
        {
            foreach (var (name, node) in weightMap)
            {
                if (node is not JsonValue v || !v.TryGetValue<string>(out var shard))
                    throw new PeftSharpException($"{indexPath}: weight_map entry '{name}' must be a file name.");
                if (shard.Length == 0 || shard.Contains('/') || shard.Contains('\\') || shard == "." || shard == "..")
                    throw new PeftSharpException($"{indexPath}: weight_map entry '{name}' names '{shard}', which is not a file in the index's folder.");
                if (!files.TryGetValue(shard, out var file))
                {
                    string shardPath = System.IO.Path.Combine(folder, shard);
                    if (!File.Exists(shardPath))
                        throw new PeftSharpException($"{indexPath}: shard '{shard}' (holding '{name}') is missing; download every shard listed in the index.");
                    files[shard] = file = SafetensorsFile.Open(shardPath);
                }
                if (!file.TryGetTensor(name, out var tensor))
                    throw new PeftSharpException($"{indexPath}: the index puts tensor '{name}' in '{shard}', which does not hold it.");
                byName[name] = tensor;
            }
        }
        catch
        {
            foreach (var f in files.Values) f.Dispose();
            throw;
        }
        return new SafetensorsCheckpoint(indexPath, files.Values.ToArray(), byName);
    }

    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
    }
}
