namespace PeftSharp.Formats.Tokenizers;

/// <summary>
/// GPT-2's bytes_to_unicode: every byte gets a printable character (printable Latin-1 bytes map to
/// themselves, the other 68 to U+0100 onwards), so byte-level tokens are ordinary strings.
/// </summary>
public static class ByteLevel
{
    private static readonly char[] ByteToCharTable = Build();
    private static readonly short[] CharToByteTable = BuildReverse();

    /// <summary>The character standing for byte <paramref name="b"/>.</summary>
    public static char ByteToChar(byte b) => ByteToCharTable[b];

    /// <summary>The byte a byte-level character stands for, or -1 when <paramref name="c"/> is not one.</summary>
    public static int CharToByte(char c) => c < CharToByteTable.Length ? CharToByteTable[c] : -1;

    private static char[] Build()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    private static short[] BuildReverse()
    {
        var reverse = new short[512];
        Array.Fill(reverse, (short)-1);
        for (int b = 0; b < 256; b++) reverse[ByteToCharTable[b]] = (short)b;
        return reverse;
    }
}
