using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>Which vector width the kernels use.</summary>
public enum SimdPath { Scalar = 0, Vector256 = 256, Vector512 = 512 }

/// <summary>
/// The kernels' dispatch switch. <see cref="Path"/> is the widest path the hardware accelerates;
/// tests force a narrower one with <see cref="Force"/> to check every path against the naive oracle.
/// </summary>
public static class Simd
{
    public static SimdPath Best { get; } =
        Vector512.IsHardwareAccelerated ? SimdPath.Vector512 :
        Vector256.IsHardwareAccelerated ? SimdPath.Vector256 : SimdPath.Scalar;

    private static SimdPath? _forced;

    public static SimdPath Path => _forced ?? Best;

    public static bool Use512 => Path == SimdPath.Vector512;
    public static bool Use256 => Path >= SimdPath.Vector256;

    /// <summary>Forces a path (never wider than the hardware's) until the returned scope is disposed.</summary>
    public static IDisposable Force(SimdPath path)
    {
        if (path > Best) path = Best;
        var previous = _forced;
        _forced = path;
        return new Scope(previous);
    }

    private sealed class Scope(SimdPath? previous) : IDisposable
    {
        public void Dispose() => _forced = previous;
    }
}
