namespace PeftSharp.Tests.Kernels;

/// <summary>
/// <see cref="PeftSharp.Kernels.Simd.Force"/> switches the path process-wide, so every test class that
/// forces a path joins this collection: it runs alone, after the parallel tests, and cannot change
/// the path under another test (e.g. the bit-exact determinism of the memorization test).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SimdForcingCollection
{
    public const string Name = "Simd.Force";
}
