namespace PeftSharp.Formats;

/// <summary>
/// Copies files of a model folder (tokenizer files, generation_config.json...) into an output folder
/// without following symbolic links out of it: a model folder downloaded from a stranger may hold a link
/// to /etc/shadow or ~/.ssh/id_rsa, which a plain copy would turn into a regular file in the output.
/// A link is followed only when its final target is a regular file inside the source folder, or, for a
/// Hugging Face hub-cache snapshot (<c>…/snapshots/&lt;revision&gt;</c>, whose files are links into the
/// repository's <c>blobs</c> folder), inside that blobs folder. Anything else is skipped with a notice.
/// </summary>
public static class FolderCopy
{
    /// <summary>
    /// Copies <paramref name="file"/> (inside <paramref name="sourceFolder"/>) to <paramref name="destination"/>
    /// when it is safe to; returns false and reports through <paramref name="notice"/> when it was skipped.
    /// </summary>
    public static bool CopyFile(string sourceFolder, string file, string destination, Action<string>? notice = null)
    {
        var info = new FileInfo(file);
        string? problem = null;
        if (info.LinkTarget != null)
        {
            FileSystemInfo? target;
            try { target = info.ResolveLinkTarget(returnFinalTarget: true); }
            catch (IOException) { target = null; }
            if (target is not FileInfo { Exists: true } resolved || resolved.LinkTarget != null)
                problem = $"it is a symbolic link to '{info.LinkTarget}', which is not a regular file";
            else if (!AllowedRoots(sourceFolder).Any(root => IsInside(resolved.FullName, root)))
                problem = $"it is a symbolic link to '{resolved.FullName}', outside the model folder";
        }
        else if (!info.Exists) problem = "it is not a regular file";
        if (problem != null)
        {
            notice?.Invoke($"{file}: not copied: {problem}.");
            return false;
        }
        File.Copy(file, destination, overwrite: true);
        return true;
    }

    private static IEnumerable<string> AllowedRoots(string sourceFolder)
    {
        var folder = new DirectoryInfo(Path.GetFullPath(sourceFolder));
        yield return ResolveFolder(folder);
        if (folder.Parent is { Name: "snapshots", Parent: { } repository })
            yield return ResolveFolder(new DirectoryInfo(Path.Combine(repository.FullName, "blobs")));
    }

    private static string ResolveFolder(DirectoryInfo folder)
    {
        try { return folder.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? folder.FullName; }
        catch (IOException) { return folder.FullName; }
    }

    private static bool IsInside(string path, string root)
    {
        string prefix = root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar;
        return path.StartsWith(prefix, StringComparison.Ordinal);
    }
}
