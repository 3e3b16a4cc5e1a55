using System.Text;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>
/// Unicode NFC from our own tables (the process runs with invariant globalization, where
/// <see cref="string.Normalize()"/> does nothing). Text holding no character that NFC could change
/// is returned as is, without allocating.
/// </summary>
internal static class UnicodeNfc
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private static readonly Dictionary<int, int> CombiningClass = new();
    private static readonly Dictionary<int, int[]> Decomposition = new();
    private static readonly Dictionary<long, int> Composition = new();
    // BMP characters that may change under NFC, alone or next to their neighbours.
    private static readonly bool[] Unsafe = new bool[0x10000];
    private static readonly bool HasUnsafeAstral;

    static UnicodeNfc()
    {
        bool astral = false;
        var ccc = UnicodeNfcData.CombiningClassRanges;
        for (int i = 0; i < ccc.Length; i += 3)
            for (int cp = ccc[i]; cp <= ccc[i + 1]; cp++) { CombiningClass[cp] = ccc[i + 2]; Mark(cp); }
        var dec = UnicodeNfcData.Decompositions;
        for (int i = 0; i < dec.Length;)
        {
            int cp = dec[i], n = dec[i + 1];
            Decomposition[cp] = dec.Slice(i + 2, n).ToArray();
            Mark(cp);
            i += 2 + n;
        }
        var comp = UnicodeNfcData.Compositions;
        for (int i = 0; i < comp.Length; i += 3)
        {
            Composition[Key(comp[i], comp[i + 1])] = comp[i + 2];
            Mark(comp[i + 1]);
        }
        for (int cp = VBase; cp < VBase + VCount; cp++) Mark(cp);
        for (int cp = TBase + 1; cp < TBase + TCount; cp++) Mark(cp);
        HasUnsafeAstral = astral;

        void Mark(int cp)
        {
            if (cp < 0x10000) Unsafe[cp] = true;
            else astral = true;
        }
    }

    private static long Key(int a, int b) => ((long)a << 21) | (uint)b;

    public static string Normalize(string text)
    {
        if (!NeedsWork(text)) return text;
        var cps = new List<int>(text.Length + 8);
        foreach (var rune in text.EnumerateRunes()) Decompose(rune.Value, cps);
        Reorder(cps);
        Compose(cps);
        var sb = new StringBuilder(cps.Count + 8);
        foreach (int cp in cps) sb.Append(new Rune(cp).ToString());
        return sb.ToString();
    }

    private static bool NeedsWork(string text)
    {
        foreach (char c in text)
        {
            if (c < 0x300) continue;
            if (Unsafe[c] || (HasUnsafeAstral && char.IsSurrogate(c))) return true;
        }
        return false;
    }

    private static void Decompose(int cp, List<int> output)
    {
        int s = cp - SBase;
        if ((uint)s < SCount)
        {
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
        }
        else if (Decomposition.TryGetValue(cp, out var d)) output.AddRange(d);
        else output.Add(cp);
    }

    private static int Ccc(int cp) => cp < 0x300 ? 0 : CombiningClass.GetValueOrDefault(cp);

    /// <summary>Canonical ordering: a stable sort of each run of non-starters by combining class.</summary>
    private static void Reorder(List<int> cps)
    {
        for (int i = 1; i < cps.Count; i++)
        {
            int c = Ccc(cps[i]);
            if (c == 0) continue;
            int j = i;
            while (j > 0 && Ccc(cps[j - 1]) > c)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
    }

    private static void Compose(List<int> cps)
    {
        if (cps.Count == 0) return;
        int starter = -1, write = 0, lastClass = -1;
        for (int read = 0; read < cps.Count; read++)
        {
            int cp = cps[read], cc = Ccc(cp);
            if (starter >= 0 && (lastClass < cc || (lastClass == 0 && write == starter + 1)) && TryCompose(cps[starter], cp, out int composite))
            {
                cps[starter] = composite;
                continue;
            }
            if (cc == 0) { starter = write; lastClass = 0; }
            else lastClass = cc;
            cps[write++] = cp;
        }
        cps.RemoveRange(write, cps.Count - write);
    }

    private static bool TryCompose(int a, int b, out int composite)
    {
        int l = a - LBase, v = b - VBase;
        if ((uint)l < LCount && (uint)v < VCount) { composite = SBase + (l * VCount + v) * TCount; return true; }
        int s = a - SBase, t = b - TBase;
        if ((uint)s < SCount && s % TCount == 0 && t > 0 && t < TCount) { composite = a + t; return true; }
        return Composition.TryGetValue(Key(a, b), out composite);
    }
}
