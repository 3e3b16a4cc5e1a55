namespace PeftSharp.Formats;

/// <summary>
/// Turns a model reference into a local folder: either a folder path, or a Hugging Face Hub id
/// "ORG/NAME" looked up in the local hub cache (HF_HUB_CACHE, else HF_HOME/hub, else
/// ~/.cache/huggingface/hub; models--ORG--NAME/refs/main names the snapshot). Nothing is downloaded.
/// </summary>
public static class ModelFolder
{
    /// <summary>Resolves <paramref name="reference"/>; <paramref name="environment"/> reads environment variables (defaults to the process environment).</summary>
    public static string Resolve(string reference, Func<string, string?>? environment = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(reference);
        environment ??= Environment.GetEnvironmentVariable;
        var looked = new List<string>();

        string local = Path.GetFullPath(ExpandHome(reference, environment));
        if (Directory.Exists(local)) return local;
        looked.Add($"local folder {local} (does not exist)");

        if (IsHubId(reference))
        {
            var (cache, origin) = HubCache(environment);
            string repo = Path.Combine(cache, "models--" + reference.Replace("/", "--", StringComparison.Ordinal));
            string? snapshot = Snapshot(repo, out string why);
            if (snapshot != null) return snapshot;
            looked.Add($"Hugging Face cache {repo} ({origin}): {why}");
        }

        string name = IsHubId(reference) ? reference : "ORG/NAME";
        throw new PeftSharpException(
            $"Model '{reference}' not found. Looked in:\n" + string.Concat(looked.Select(l => $"  - {l}\n")) +
            $"Download it with `huggingface-cli download {name} --local-dir DIR` and pass DIR, " +
            $"or `huggingface-cli download {name}` to fill the Hugging Face cache.");
    }

    /// <summary>The hub cache folder and which setting chose it.</summary>
    public static (string Path, string Origin) HubCache(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        if (environment("HF_HUB_CACHE") is { Length: > 0 } hubCache) return (ExpandHome(hubCache, environment), "HF_HUB_CACHE");
        if (environment("HF_HOME") is { Length: > 0 } hfHome) return (Path.Combine(ExpandHome(hfHome, environment), "hub"), "HF_HOME/hub");
        return (Path.Combine(Home(environment), ".cache", "huggingface", "hub"), "default ~/.cache/huggingface/hub");
    }

    /// <summary>"ORG/NAME": two non-empty parts, no path syntax, and not an existing relative path.</summary>
    public static bool IsHubId(string reference)
    {
        var parts = reference.Split('/');
        return parts.Length == 2 && parts.All(p => p.Length > 0 && p != "." && p != ".." && !p.Contains('\\') && !p.StartsWith('~'))
            && !Path.IsPathRooted(reference);
    }

    internal static string? Snapshot(string repo, out string why)
    {
        if (!Directory.Exists(repo)) { why = "not downloaded"; return null; }
        string snapshots = Path.Combine(repo, "snapshots");
        string refFile = Path.Combine(repo, "refs", "main");
        if (File.Exists(refFile))
        {
            string revision = File.ReadAllText(refFile).Trim();
            string folder = Path.Combine(snapshots, revision);
            if (revision.Length > 0 && !revision.Contains('/') && !revision.Contains('\\') && Directory.Exists(folder))
            {
                why = "";
                return folder;
            }
            why = $"refs/main names revision '{revision}' but snapshots/{revision} is missing";
            return null;
        }
        var all = Directory.Exists(snapshots) ? Directory.GetDirectories(snapshots) : [];
        if (all.Length == 1) { why = ""; return all[0]; }
        why = all.Length == 0 ? "no snapshot downloaded" : $"no refs/main and {all.Length} snapshots to choose from";
        return null;
    }

    private static string Home(Func<string, string?> environment) =>
        environment("HOME") is { Length: > 0 } home ? home : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);

    private static string ExpandHome(string path, Func<string, string?> environment) =>
        path == "~" ? Home(environment)
        : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(Home(environment), path[2..])
        : path;
}
