using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftSharp.Kernels;

/// <summary>
/// Vector512 transcendental functions for the hot softmax/activation loops, branch-free and a few ulp accurate.
/// </summary>
internal static class FastMath
{
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693145751953125f;       // ln 2 split so that n·Ln2Hi is exact (Cody–Waite)
    private const float Ln2Lo = 1.428606765330187045e-6f;

    /// <summary>
    /// e^x as 2^n·e^r with n = round(x·log2 e) and |r| ≤ ln2/2, e^r by its degree-6 Taylor polynomial (relative
    /// error below 2·10⁻⁷). x ≤ −88 (and −∞) gives 0, x ≥ 88 gives e^88 (finite), NaN stays NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var clamped = Vector512.Min(Vector512.Max(x, Vector512.Create(-88f)), Vector512.Create(88f));
        var n = Vector512.Round(clamped * Vector512.Create(Log2E));
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Hi), clamped);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Lo), r);
        var p = Vector512.Create(1f / 720f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 120f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 24f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 6f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(0.5f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        var scale = (Vector512.ConvertToInt32(n) + Vector512.Create(127)).As<int, uint>() << 23;
        var result = p * scale.As<uint, float>();
        return Vector512.ConditionalSelect(Vector512.Equals(x, x), result, x);
    }
}
