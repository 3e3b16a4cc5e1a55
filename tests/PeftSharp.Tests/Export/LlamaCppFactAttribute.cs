using LLama.Native;

namespace PeftSharp.Tests.Export;

/// <summary>
/// Whether llama.cpp's native library (LLamaSharp.Backend.Cpu) loads on this machine: the tests that use it as the
/// judge skip with this reason where it does not (an unsupported OS/CPU), instead of failing.
/// </summary>
public static class LlamaCppAvailability
{
    private static readonly Lazy<string?> Reason = new(Probe);

    /// <summary>Null when the library loads; else why it does not.</summary>
    public static string? Unavailable => Reason.Value;

    private static string? Probe()
    {
        try
        {
            NativeLibraryConfig.All.WithLogCallback((level, message) => { });
            NativeApi.llama_empty_call();
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or BadImageFormatException or EntryPointNotFoundException or LLama.Exceptions.RuntimeError)
        {
            return $"llama.cpp (LLamaSharp.Backend.Cpu) does not load on this machine, so the GGUF files cannot be checked by it: {e.GetBaseException().Message}";
        }
    }

    public static string? SkipReason(bool needsAssets) =>
        needsAssets && TestAssets.Root == null ? TestAssets.MissingMessage : Unavailable;
}

/// <summary>A fact judged by the real llama.cpp: skipped where its native library does not load (or, with NeedsAssets, where ../shared/assets is absent).</summary>
public sealed class LlamaCppFactAttribute : FactAttribute
{
    public LlamaCppFactAttribute(bool needsAssets = false) => Skip = LlamaCppAvailability.SkipReason(needsAssets);
}

/// <summary>A theory judged by the real llama.cpp; see <see cref="LlamaCppFactAttribute"/>.</summary>
public sealed class LlamaCppTheoryAttribute : TheoryAttribute
{
    public LlamaCppTheoryAttribute(bool needsAssets = false) => Skip = LlamaCppAvailability.SkipReason(needsAssets);
}
