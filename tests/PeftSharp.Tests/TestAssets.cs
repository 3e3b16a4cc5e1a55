namespace PeftSharp.Tests;

/// <summary>
/// Locates ../shared/assets (real third-party files: tokenizers, adapters, a tiny Llama, goldens).
/// PEFTSHARP_ASSETS overrides the location. A clone without them skips the tests that need them.
/// </summary>
public static class TestAssets
{
    public static string? Root { get; } = Find();

    public const string MissingMessage =
        "../shared/assets not found (set PEFTSHARP_ASSETS to the assets folder); this test needs real third-party files.";

    public static string Path(params string[] parts) =>
        System.IO.Path.Combine([Root ?? throw new InvalidOperationException(MissingMessage), .. parts]);

    /// <summary>The repository root (the folder holding PeftSharp.slnx).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    private static string? Find()
    {
        var env = Environment.GetEnvironmentVariable("PEFTSHARP_ASSETS");
        if (!string.IsNullOrEmpty(env)) return Directory.Exists(env) ? env : null;
        var candidate = System.IO.Path.GetFullPath(System.IO.Path.Combine(FindRepoRoot(), "..", "shared", "assets"));
        return Directory.Exists(candidate) ? candidate : null;
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(System.IO.Path.Combine(dir.FullName, "PeftSharp.slnx")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Cannot find the repository root (PeftSharp.slnx) above " + AppContext.BaseDirectory);
    }
}

/// <summary>A fact that skips with a clear message where ../shared/assets is absent.</summary>
public sealed class AssetFactAttribute : FactAttribute
{
    public AssetFactAttribute()
    {
        if (TestAssets.Root == null) Skip = TestAssets.MissingMessage;
    }
}

/// <summary>A theory that skips with a clear message where ../shared/assets is absent.</summary>
public sealed class AssetTheoryAttribute : TheoryAttribute
{
    public AssetTheoryAttribute()
    {
        if (TestAssets.Root == null) Skip = TestAssets.MissingMessage;
    }
}
