using System.Text;
using PeftSharp.Formats.Safetensors;

namespace PeftSharp.Tests.Formats;

/// <summary>Crafted broken files: each must be refused with a message naming the file and, where one is involved, the tensor.</summary>
public sealed class SafetensorsValidationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-stv-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Craft(string header, int dataBytes, ulong? declaredLength = null)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        string path = Path.Combine(_dir, $"crafted-{Guid.NewGuid():N}.safetensors");
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes(declaredLength ?? (ulong)json.Length));
        stream.Write(json);
        stream.Write(new byte[dataBytes]);
        return path;
    }

    private static string Refused(string path, params string[] expectedInMessage)
    {
        var e = Assert.Throws<PeftSharpException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains(Path.GetFileName(path), e.Message);
        foreach (var part in expectedInMessage) Assert.Contains(part, e.Message);
        return e.Message;
    }

    private static string T(string name, string dtype, string shape, long start, long end) =>
        $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{shape}],\"data_offsets\":[{start},{end}]}}";

    [Fact]
    public void AcceptsAWellFormedCraftedFileWithTensorsOutOfHeaderOrder()
    {
        string path = Craft("{" + T("b", "F32", "2", 8, 16) + "," + T("a", "F16", "2,2", 0, 8) + "}", 16);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(["a", "b"], file.Names);
        Assert.Empty(file.Metadata);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    public void RefusesAFileShorterThanEightBytes(int length)
    {
        string path = Path.Combine(_dir, "short.safetensors");
        File.WriteAllBytes(path, new byte[length]);
        Refused(path, "shorter than the 8-byte");
    }

    [Fact]
    public void RefusesAHeaderLengthBeyondTheFile() =>
        Refused(Craft("{}", 0, declaredLength: 3), "runs past the end");

    [Fact]
    public void RefusesAHeaderAboveOneHundredMegabytes() =>
        Refused(Craft("{}", 0, declaredLength: 100_000_001), "above the 100000000-byte limit");

    [Theory]
    [InlineData("{\"a\":{\"dtype\":\"F32\",")]
    [InlineData("{\"a\" 1}")]
    [InlineData("{} x")]
    [InlineData("[]")]
    public void RefusesMalformedJson(string header) => Refused(Craft(header, 0), "header");

    [Fact]
    public void RefusesAnUnknownDtype() =>
        Refused(Craft("{" + T("w", "F8_E4M3", "4", 0, 4) + "}", 4), "tensor 'w'", "F8_E4M3");

    [Fact]
    public void RefusesOffsetsOutsideTheBuffer() =>
        Refused(Craft("{" + T("w", "F32", "4", 0, 16) + "}", 8), "tensor 'w'", "truncated");

    [Fact]
    public void RefusesOverlappingOffsets() =>
        Refused(Craft("{" + T("a", "F32", "2", 0, 8) + "," + T("b", "F32", "2", 4, 12) + "}", 12), "tensor 'b'", "overlap", "'a'");

    [Fact]
    public void RefusesAGapBetweenTensors() =>
        Refused(Craft("{" + T("a", "F32", "2", 0, 8) + "," + T("b", "F32", "2", 12, 20) + "}", 20), "tensor 'b'", "gap");

    [Fact]
    public void RefusesAShapeThatDoesNotMatchTheByteSpan() =>
        Refused(Craft("{" + T("w", "BF16", "3,3", 0, 16) + "}", 16), "tensor 'w'", "needs 18 bytes");

    [Fact]
    public void RefusesDuplicateNames() =>
        Refused(Craft("{" + T("w", "U8", "4", 0, 4) + "," + T("w", "U8", "4", 4, 8) + "}", 8), "tensor 'w'", "twice");

    [Fact]
    public void RefusesNegativeDimensions() =>
        Refused(Craft("{" + T("w", "F32", "-1,4", 0, 16) + "}", 16), "tensor 'w'", "negative");

    [Fact]
    public void RefusesEndBeforeStart() =>
        Refused(Craft("{" + T("w", "U8", "0", 8, 4) + "}", 8), "tensor 'w'", "end before");

    [Fact]
    public void RefusesAnOverflowingShape() =>
        Refused(Craft("{" + T("w", "F64", "4294967296,4294967296", 0, 8) + "}", 8), "tensor 'w'", "too large");

    [Fact]
    public void RefusesTrailingBytesAfterTheLastTensor() =>
        Refused(Craft("{" + T("w", "U8", "4", 0, 4) + "}", 6), "trailing");

    [Fact]
    public void RefusesMissingFieldsAndNonStringMetadata()
    {
        Refused(Craft("{\"w\":{\"dtype\":\"U8\",\"shape\":[4]}}", 4), "tensor 'w'", "data_offsets");
        Refused(Craft("{\"__metadata__\":{\"step\":3}}", 0), "__metadata__", "step");
    }

    [Fact]
    public void EveryTruncationOfAValidFileIsRefusedWithoutCrashing()
    {
        string path = Path.Combine(_dir, "valid.safetensors");
        SafetensorsWriter.Write(path,
        [
            SafetensorsEntry.FromFloat32("a", [3], [1f, 2f, 3f]),
            SafetensorsEntry.FromBytes("b", PeftSharp.Tensors.DType.BF16, [2], new byte[4]),
        ]);
        byte[] bytes = File.ReadAllBytes(path);
        string cut = Path.Combine(_dir, "cut.safetensors");
        for (int length = 0; length < bytes.Length; length++)
        {
            File.WriteAllBytes(cut, bytes[..length]);
            Assert.Throws<PeftSharpException>(() => SafetensorsFile.Open(cut).Dispose());
        }
        using var whole = SafetensorsFile.Open(path);
        Assert.Equal([1f, 2f, 3f], whole["a"].ToFloat32());
    }

    [Fact]
    public void RefusesAMissingFile() =>
        Assert.Contains("not found", Assert.Throws<PeftSharpException>(() => SafetensorsFile.Open(Path.Combine(_dir, "none.safetensors"))).Message);
}
