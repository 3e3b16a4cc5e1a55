using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PeftSharp.Tensors;

/// <summary>The whole state of an <see cref="Rng"/>: four ulongs, for checkpoints.</summary>
public readonly record struct RngState(ulong S0, ulong S1, ulong S2, ulong S3);

/// <summary>
/// A seeded xoshiro256** generator (Blackman and Vigna), seeded through SplitMix64. Deterministic for
/// a seed; <see cref="Split"/> derives an independent child stream; the state is four ulongs
/// (<see cref="State"/>) so a trainer can save and restore it. Not thread-safe: give each thread its own.
/// </summary>
public sealed class Rng
{
    private ulong _s0, _s1, _s2, _s3;

    public Rng(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    public Rng(RngState state)
    {
        if ((state.S0 | state.S1 | state.S2 | state.S3) == 0)
            throw new ArgumentException("An all-zero xoshiro256** state is invalid (the generator would only produce zeros).", nameof(state));
        (_s0, _s1, _s2, _s3) = (state.S0, state.S1, state.S2, state.S3);
    }

    public RngState State
    {
        get => new(_s0, _s1, _s2, _s3);
        set
        {
            if ((value.S0 | value.S1 | value.S2 | value.S3) == 0)
                throw new ArgumentException("An all-zero xoshiro256** state is invalid.", nameof(value));
            (_s0, _s1, _s2, _s3) = (value.S0, value.S1, value.S2, value.S3);
        }
    }

    /// <summary>A new generator whose stream is independent of this one's (seeded from this one's next output).</summary>
    public Rng Split() => new(NextUInt64() ^ 0x9E3779B97F4A7C15UL);

    public ulong NextUInt64()
    {
        ulong result = BitOperations.RotateLeft(_s1 * 5, 7) * 9;
        Advance(ref _s0, ref _s1, ref _s2, ref _s3);
        return result;
    }

    /// <summary>xoshiro256**'s state transition.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Advance(ref ulong s0, ref ulong s1, ref ulong s2, ref ulong s3)
    {
        ulong t = s1 << 17;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = BitOperations.RotateLeft(s3, 45);
    }

    /// <summary>Uniform in [0, 1) with 24 random bits.</summary>
    public float NextFloat() => (NextUInt64() >> 40) * (1f / (1 << 24));

    /// <summary>Advances the generator past <paramref name="draws"/> outputs of <see cref="NextUInt64"/> (the state kept in registers).</summary>
    public void Skip(long draws)
    {
        ulong s0 = _s0, s1 = _s1, s2 = _s2, s3 = _s3;
        for (long i = 0; i < draws; i++) Advance(ref s0, ref s1, ref s2, ref s3);
        (_s0, _s1, _s2, _s3) = (s0, s1, s2, s3);
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, maxExclusive).</summary>
    public int NextInt(int maxExclusive)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxExclusive);
        return (int)((NextUInt64() >> 32) * (ulong)maxExclusive >> 32);
    }

    /// <summary>Standard normal sample (Box-Muller; two uniforms per sample, the sine partner is discarded).</summary>
    public float NextNormal()
    {
        double u1 = 1.0 - NextDouble(); // (0, 1]
        double u2 = NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2));
    }

    public void FillUniform(Span<float> destination, float low, float high)
    {
        float width = high - low;
        for (int i = 0; i < destination.Length; i++) destination[i] = low + width * NextFloat();
    }

    /// <summary>
    /// Normal(mean, std) samples; Box-Muller pairs fill two elements each (cosine, then sine; an odd last element takes a
    /// pair's draws and the cosine). The logarithm, square root and sine/cosine run on four pairs at once in double
    /// (<see cref="Vector256"/>; a short last group pads its lanes without drawing), so every element comes from the same
    /// code wherever a call starts or ends on a multiple of eight elements: the random weights of a 65B-parameter model
    /// are drawn at about a quarter of the per-pair scalar cost. The vector functions may differ from the scalar ones in
    /// the last bit of the double, which rounding to float hides but for about one value in 10⁸ (one float ulp).
    /// </summary>
    public void FillNormal(Span<float> destination, float mean, float std)
    {
        Span<double> u1 = stackalloc double[Vector256<double>.Count], u2 = stackalloc double[Vector256<double>.Count];
        var twoPi = Vector256.Create(2.0 * Math.PI);
        for (int i = 0; i < destination.Length; i += 2 * Vector256<double>.Count)
        {
            int n = Math.Min(2 * Vector256<double>.Count, destination.Length - i), pairs = (n + 1) / 2;
            for (int k = 0; k < u1.Length; k++)
            {
                bool drawn = k < pairs;
                u1[k] = drawn ? 1.0 - NextDouble() : 1.0;
                u2[k] = drawn ? NextDouble() : 0.0;
            }
            var radius = Vector256.Sqrt(Vector256.Create(-2.0) * Vector256.Log(Vector256.Create<double>(u1)));
            var (sin, cos) = Vector256.SinCos(twoPi * Vector256.Create<double>(u2));
            var first = radius * cos;
            var second = radius * sin;
            for (int k = 0; k < pairs; k++)
            {
                destination[i + 2 * k] = mean + std * (float)first.GetElement(k);
                if (2 * k + 1 < n) destination[i + 2 * k + 1] = mean + std * (float)second.GetElement(k);
            }
        }
    }

    /// <summary>
    /// torch.nn.init.kaiming_uniform_ (fan_in mode, leaky_relu gain): U(-bound, bound) with
    /// bound = sqrt(2/(1+a²))·sqrt(3/fanIn). The default a = √5 is nn.Linear's init (bound = 1/sqrt(fanIn)).
    /// </summary>
    public void FillKaimingUniform(Span<float> destination, int fanIn, double a = 2.23606797749979)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(fanIn);
        float bound = (float)(Math.Sqrt(2.0 / (1.0 + a * a)) * Math.Sqrt(3.0 / fanIn));
        FillUniform(destination, -bound, bound);
    }

    /// <summary>
    /// A key folded from <paramref name="parts"/> (JAX-style fold-in through SplitMix64): the same parts give the same key,
    /// and any change in one part gives an unrelated key. Random streams keyed by (seed, step, micro-batch, stream)
    /// need no saved state: a resumed run, or a rank of a data-parallel run, derives the very same masks.
    /// </summary>
    public static ulong FoldIn(ulong key, ulong part)
    {
        ulong x = key ^ (part * 0xD1B54A32D192ED03UL);
        SplitMix64(ref x);
        return SplitMix64(ref x);
    }

    /// <summary>A stable 64-bit id of a stream name (FNV-1a over its UTF-16 code units), for <see cref="FoldIn"/>.</summary>
    public static ulong StreamId(string name)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (char c in name) { h ^= c; h *= 0x100000001B3UL; }
        return h;
    }

    /// <summary>Sets this generator to the stream of <paramref name="key"/> (as <c>new Rng(key)</c> would start).</summary>
    public void Reset(ulong key)
    {
        ulong x = key;
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    private static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
