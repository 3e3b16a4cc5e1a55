using System.Text.RegularExpressions;
using PeftSharp.Models;

namespace PeftSharp.Peft;

/// <summary>How one target_modules entry fared: which modules it matched.</summary>
public sealed record TargetEntryMatch(string Entry, IReadOnlyList<string> Modules);

/// <summary>The modules a LoraConfig wraps, and what each target_modules entry matched.</summary>
public sealed record TargetMatch(IReadOnlyList<LinearModuleInfo> Modules, IReadOnlyList<TargetEntryMatch> Entries)
{
    /// <summary>One line per entry: "c_proj: 24 modules (attn.c_proj ×12, mlp.c_proj ×12)".</summary>
    public IEnumerable<string> Describe() => Entries.Select(e =>
    {
        var groups = e.Modules.GroupBy(LayerlessName).Select(g => $"{g.Key} ×{g.Count()}");
        return $"{e.Entry}: {e.Modules.Count} module{(e.Modules.Count == 1 ? "" : "s")} ({string.Join(", ", groups)})";
    });

    /// <summary>`transformer.h.3.attn.c_attn` → `attn.c_attn`: the name inside a numbered layer.</summary>
    public static string LayerlessName(string name)
    {
        var m = Regex.Match(name, @"\.\d+\.(.+)$");
        return m.Success ? m.Groups[1].Value : name;
    }
}

/// <summary>
/// PEFT's module selection (check_target_module_exists), exactly: a string target is a regex that
/// must match the whole key; a list entry matches a key equal to it or ending in "." + entry;
/// exclude_modules is checked first the same way; layers_to_transform / layers_pattern keep only
/// the listed layer indices; "all-linear" takes every linear layer but the output layer.
/// </summary>
public static class TargetMatcher
{
    public static TargetMatch Match(LoraConfig config, IReadOnlyList<LinearModuleInfo> candidates, string? modelType = null)
    {
        var targets = config.TargetModules;
        if (targets == null)
        {
            if (modelType == null || !LoraConfig.DefaultTargetModules.TryGetValue(modelType, out var defaults))
                throw new PeftSharpException($"lora: target_modules is not set and there is no default for model type \"{modelType}\"; set target_modules (e.g. [\"q_proj\", \"v_proj\"] or \"all-linear\").");
            targets = TargetModules.FromNames(defaults);
        }

        var selected = new List<LinearModuleInfo>();
        var perEntry = new Dictionary<string, List<string>>();
        var entries = targets.Names ?? [targets.Pattern!];
        foreach (var e in entries) perEntry[e] = [];

        foreach (var module in candidates)
        {
            if (IsExcluded(config.ExcludeModules, module.Name)) continue;
            string? entry = MatchingEntry(targets, module);
            if (entry == null || !InSelectedLayers(config, module.Name)) continue;
            selected.Add(module);
            perEntry[entry].Add(module.Name);
        }

        var result = new TargetMatch(selected, entries.Select(e => new TargetEntryMatch(e, perEntry[e])).ToList());
        var unmatched = result.Entries.Where(e => e.Modules.Count == 0).Select(e => e.Entry).ToList();
        if (unmatched.Count > 0)
        {
            var available = candidates.Select(m => TargetMatch.LayerlessName(m.Name)).Distinct().ToList();
            var shortNames = candidates.Select(m => m.ShortName).Distinct().ToList();
            var hints = string.Concat(unmatched.Select(u => Suggestions.DidYouMean(u, shortNames)));
            throw new PeftSharpException(
                $"lora: target_modules entr{(unmatched.Count == 1 ? "y" : "ies")} {string.Join(", ", unmatched.Select(u => $"\"{u}\""))} matched no module of the model.{hints} " +
                $"Linear modules available: {string.Join(", ", available)}.");
        }
        return result;
    }

    private static string? MatchingEntry(TargetModules targets, LinearModuleInfo module)
    {
        if (targets.IsAllLinear)
            return module.IsOutputLayer ? null : TargetModules.AllLinearKeyword;
        if (targets.Pattern != null)
            return FullMatch(targets.Pattern, module.Name) ? targets.Pattern : null;
        foreach (var name in targets.Names!)
            if (module.Name == name || module.Name.EndsWith("." + name, StringComparison.Ordinal))
                return name;
        return null;
    }

    private static bool IsExcluded(TargetModules? exclude, string key)
    {
        if (exclude == null) return false;
        if (exclude.Pattern != null) return FullMatch(exclude.Pattern, key);
        return exclude.Names!.Any(n => key == n || key.EndsWith("." + n, StringComparison.Ordinal));
    }

    private static bool InSelectedLayers(LoraConfig config, string key)
    {
        if (config.LayersToTransform is not { Count: > 0 } layers) return true;
        Match? m = null;
        if (config.LayersPattern is not { Count: > 0 } patterns)
            m = Regex.Match(key, @"^.*\.[^.]*\.(\d+)\.");
        else
            foreach (var p in patterns)
                if ((m = Regex.Match(key, $@"^.*\.{p}\.(\d+)\.")).Success) break;
        return m is { Success: true } && layers.Contains(int.Parse(m.Groups[1].Value));
    }

    private static bool FullMatch(string pattern, string key) => Regex.IsMatch(key, $@"^(?:{pattern})\z");
}
