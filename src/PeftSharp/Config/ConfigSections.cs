using System.Text.Json.Nodes;

namespace PeftSharp.Config;

/// <summary>
/// A config file of named sections checked against their <see cref="SectionSpec"/>s, for the commands with their own
/// config (judge, the judge reward): an unknown section or key is refused by name (with the nearest valid one), a value
/// of the wrong type or range names the key and what was expected. Relative paths in the named keys are made absolute
/// beside the file, as the run config reads data files.
/// </summary>
public static class ConfigSections
{
    /// <summary>Each section (empty when absent), every key checked.</summary>
    public static Dictionary<string, JsonObject> Read(JsonObject tree, IReadOnlyList<SectionSpec> specs)
    {
        var names = specs.Select(s => s.Name).ToList();
        foreach (var (name, _) in tree)
            if (!names.Contains(name))
                throw new PeftSharpException($"unknown section \"{name}\".{Suggestions.DidYouMean(name, names)} Sections: {string.Join(", ", names)}.");
        var result = new Dictionary<string, JsonObject>();
        foreach (var spec in specs)
        {
            var section = tree[spec.Name] switch
            {
                null => new JsonObject(),
                JsonObject o => o,
                var other => throw new PeftSharpException($"section \"{spec.Name}\" must be a mapping of keys, got {other.ToJsonString()}."),
            };
            foreach (var (key, value) in section)
            {
                if (!spec.Keys.TryGetValue(key, out var keySpec))
                    throw new PeftSharpException($"{spec.Name}: unknown key \"{key}\".{Suggestions.DidYouMean(key, spec.Keys.Keys)} Valid keys: {string.Join(", ", spec.Keys.Keys)}.");
                if (keySpec.Check(value) is { } expected)
                    throw new PeftSharpException($"{spec.Name}.{key} must be {expected}, got {value?.ToJsonString() ?? "null"}.");
            }
            result[spec.Name] = section;
        }
        return result;
    }

    /// <summary>Loads <paramref name="path"/> (YAML or JSON) and reads its sections; <paramref name="paths"/> (section, key) are resolved beside the file.</summary>
    public static Dictionary<string, JsonObject> Load(string path, IReadOnlyList<SectionSpec> specs, IEnumerable<(string Section, string Key)> paths)
    {
        var tree = ConfigTree.LoadFile(path);
        try
        {
            var sections = Read(tree, specs);
            string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
            foreach (var (section, key) in paths)
                if (sections[section].Str(key) is { } value && !Path.IsPathRooted(value))
                    sections[section][key] = Path.GetFullPath(Path.Combine(dir, value));
            return sections;
        }
        catch (PeftSharpException e) { throw new PeftSharpException($"{path}: {e.Message}"); }
    }
}
