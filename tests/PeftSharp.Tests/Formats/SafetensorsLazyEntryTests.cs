using PeftSharp.Formats.Safetensors;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Formats;

public sealed class SafetensorsLazyEntryTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-lazy-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Pattern(int n, int seed) => Enumerable.Range(0, n).Select(i => (byte)(i * 7 + seed)).ToArray();

    /// <summary>Writes <paramref name="bytes"/> through the stream in uneven pieces, one of them a single WriteByte.</summary>
    private static Action<Stream> InPieces(byte[] bytes) => stream =>
    {
        stream.WriteByte(bytes[0]);
        int done = 1;
        for (int piece = 3; done < bytes.Length; piece = piece * 2 + 1)
        {
            int n = Math.Min(piece, bytes.Length - done);
            stream.Write(bytes, done, n);
            done += n;
        }
    };

    private SafetensorsEntry[] Mixed(Func<string, DType, long[], byte[], SafetensorsEntry> make) =>
    [
        make("b.weight", DType.BF16, [3, 5], Pattern(30, 1)),
        make("a.bias", DType.F32, [5], Pattern(20, 2)),
        make("emb", DType.I64, [2, 2], Pattern(32, 3)),
        make("flag", DType.U8, [7], Pattern(7, 4)),
        make("empty", DType.F16, [0, 4], []),
    ];

    [Fact]
    public void LazyEntriesWriteTheSameBytesAsFromBytes_CallbacksInDataOrderAfterTheHeader()
    {
        string eager = Path.Combine(_dir, "eager.safetensors"), lazy = Path.Combine(_dir, "lazy.safetensors");
        SafetensorsWriter.Write(eager, Mixed((n, d, s, b) => SafetensorsEntry.FromBytes(n, d, s, b)));
        var calls = new List<string>();
        SafetensorsWriter.Write(lazy, Mixed((name, dtype, shape, bytes) => SafetensorsEntry.FromWriter(name, dtype, shape, stream =>
        {
            calls.Add(name);
            if (bytes.Length > 0) InPieces(bytes)(stream);
        })));
        Assert.Equal(File.ReadAllBytes(eager), File.ReadAllBytes(lazy));
        Assert.Equal(["emb", "a.bias", "b.weight", "empty", "flag"], calls); // I64, F32, BF16, F16, U8: the reference's data order
        using var file = SafetensorsFile.Open(lazy);
        Assert.Equal(Pattern(30, 1), file["b.weight"].Bytes.ToArray());
    }

    [Fact]
    public void ShardedLazyEntriesMatchFromBytes()
    {
        string eager = Path.Combine(_dir, "eager"), lazy = Path.Combine(_dir, "lazy");
        var e = SafetensorsShardWriter.Write(eager, Mixed((n, d, s, b) => SafetensorsEntry.FromBytes(n, d, s, b)), maxShardBytes: 40);
        var l = SafetensorsShardWriter.Write(lazy, Mixed((name, dtype, shape, bytes) => SafetensorsEntry.FromWriter(name, dtype, shape, s => s.Write(bytes))), maxShardBytes: 40);
        Assert.Equal(e.Select(Path.GetFileName), l.Select(Path.GetFileName));
        Assert.True(e.Count > 2);
        for (int i = 0; i < e.Count; i++) Assert.Equal(File.ReadAllBytes(e[i]), File.ReadAllBytes(l[i]));
    }

    [Theory]
    [InlineData(29, "wrote 29 bytes, expected exactly 30 bytes")]
    [InlineData(31, "wrote 31 bytes or more, expected exactly 30 bytes")]
    [InlineData(0, "wrote 0 bytes, expected exactly 30 bytes")]
    public void AWrongByteCountFailsNamingTheTensorAndLeavesNoFile(int count, string message)
    {
        string path = Path.Combine(_dir, "model.safetensors");
        SafetensorsEntry[] entries =
        [
            SafetensorsEntry.FromBytes("first", DType.F32, [2], Pattern(8, 0)),
            SafetensorsEntry.FromWriter("broken.weight", DType.BF16, [3, 5], s => s.Write(Pattern(count, 1))),
        ];
        var e = Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.Write(path, entries));
        Assert.Contains("'broken.weight'", e.Message);
        Assert.Contains(message, e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir)); // neither the target nor a temporary file
    }

    [Fact]
    public void AFailingCallbackInALaterShardRemovesTheShardsAlreadyWritten()
    {
        var boom = new InvalidDataException("boom");
        SafetensorsEntry[] entries =
        [
            SafetensorsEntry.FromBytes("a", DType.F32, [10], Pattern(40, 0)),
            SafetensorsEntry.FromBytes("b", DType.F32, [10], Pattern(40, 1)),
            SafetensorsEntry.FromWriter("c", DType.F32, [10], s => { s.Write(Pattern(16, 2)); throw boom; }),
        ];
        string folder = Path.Combine(_dir, "out");
        Assert.Same(boom, Assert.Throws<InvalidDataException>(() => SafetensorsShardWriter.Write(folder, entries, maxShardBytes: 40)));
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
    }

    [Fact]
    public void AFailedRewriteLeavesTheExistingFileAsItWas()
    {
        string path = Path.Combine(_dir, "model.safetensors");
        SafetensorsWriter.Write(path, [SafetensorsEntry.FromBytes("x", DType.U8, [3], new byte[] { 1, 2, 3 })]);
        var before = File.ReadAllBytes(path);
        Assert.Throws<InvalidOperationException>(() =>
            SafetensorsWriter.Write(path, [SafetensorsEntry.FromWriter("x", DType.U8, [3], s => s.Write([9, 9]))]));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.EnumerateFileSystemEntries(_dir));
    }
}
