using System.Text;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Formats;

[Collection(PeftSharp.Tests.Kernels.SimdForcingCollection.Name)]
public sealed class SafetensorsRoundTripTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("peftsharp-st-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<string> RealFiles => new()
    {
        "adapters/gpt2-causal-c_attn-c_proj/adapter_model.safetensors",
        "adapters/gpt2-seqcls-c_attn/adapter_model.safetensors",
        "adapters/qwen2.5-0.5b-instruct-q_proj-v_proj/adapter_model.safetensors",
        "models/stories260K-hf/model.safetensors",
    };

    [AssetTheory]
    [MemberData(nameof(RealFiles))]
    public void RewritingARealFileReproducesItsBytes(string relative)
    {
        string source = TestAssets.Path(relative.Split('/'));
        string target = Path.Combine(_dir, "out.safetensors");
        using (var file = SafetensorsFile.Open(source))
        {
            Assert.NotEmpty(file.Tensors);
            // Hand the tensors over in reverse order: the writer must restore the reference layout itself.
            SafetensorsWriter.Write(target, file.Tensors.Reverse().Select(t => SafetensorsEntry.FromTensor(t)), file.Metadata);
        }
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(target));
    }

    [AssetFact]
    public void ReadsARealAdapterLazily()
    {
        using var file = SafetensorsFile.Open(TestAssets.Path("adapters", "qwen2.5-0.5b-instruct-q_proj-v_proj", "adapter_model.safetensors"));
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal(24 * 4, file.Tensors.Count);
        var b = file["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"];
        Assert.Equal(DType.F32, b.DType);
        Assert.Equal([128L, 8L], b.Shape);
        float[] values = b.ToFloat32();
        Assert.Equal(1024, values.Length);
        Assert.Equal(BitConverter.ToSingle(b.Bytes[4..8]), values[1]);
        Assert.Throws<PeftSharpException>(() => file["no.such.tensor"]);
    }

    [Fact]
    public void ReleasedPagesAreReadAgainFromTheFile()
    {
        // Three tensors spanning several pages, unaligned to them: dropping one's pages leaves every value readable.
        string path = Path.Combine(_dir, "pages.safetensors");
        var rng = new Rng(11);
        var values = Enumerable.Range(0, 3).Select(_ => { var v = new float[5_003]; rng.FillNormal(v, 0f, 1f); return v; }).ToArray();
        SafetensorsWriter.Write(path, values.Select((v, i) => SafetensorsEntry.FromFloat32($"t{i}", [v.Length], v)).ToList());
        using var file = SafetensorsFile.Open(path);
        foreach (var t in file.Tensors) Assert.Equal(values[t.Name[1] - '0'], t.ToFloat32());
        file["t1"].ReleasePages();
        foreach (var t in file.Tensors) Assert.Equal(values[t.Name[1] - '0'], t.ToFloat32());
    }

    [Fact]
    public void WritesTheReferenceHeaderForASingleTensorWithoutMetadata()
    {
        // The reference implementation's own unit test: "attn.0", F32 [1, 2, 3] holding 0..5.
        string path = Path.Combine(_dir, "one.safetensors");
        float[] data = [0, 1, 2, 3, 4, 5];
        SafetensorsWriter.Write(path, [SafetensorsEntry.FromFloat32("attn.0", [1, 2, 3], data)], new Dictionary<string, string>());
        byte[] bytes = File.ReadAllBytes(path);
        string header = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
        Assert.Equal(64, header.Length);
        Assert.Equal(64UL, BitConverter.ToUInt64(bytes, 0));
        Assert.Equal(header, Encoding.UTF8.GetString(bytes, 8, 64));
        Assert.Equal(8 + 64 + 24, bytes.Length);
        Assert.Equal(5f, BitConverter.ToSingle(bytes, 8 + 64 + 20));
    }

    [Fact]
    public void OrdersByDtypeAlignmentThenNameAndPadsWithSpaces()
    {
        string path = Path.Combine(_dir, "mixed.safetensors");
        SafetensorsEntry Entry(string name, DType dtype, int n) => SafetensorsEntry.FromBytes(name, dtype, [n], new byte[n * dtype.Size()]);
        SafetensorsWriter.Write(path,
        [
            Entry("b", DType.BF16, 3), Entry("a", DType.U8, 5), Entry("z", DType.I64, 1), Entry("c", DType.F32, 2),
            Entry("a.f16", DType.F16, 1), Entry("a.f32", DType.F32, 1), Entry("m", DType.Bool, 2), Entry("k", DType.F64, 1),
        ]);
        using var file = SafetensorsFile.Open(path);
        // Reference dtype order, widest first: I64, F64, F32, I32, BF16, F16, I16, I8, U8, BOOL.
        Assert.Equal(["z", "k", "a.f32", "c", "b", "a.f16", "a", "m"], file.Names);
        Assert.Equal(0, file.HeaderLength % 8);
        byte[] bytes = File.ReadAllBytes(path);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)file.HeaderLength);
        Assert.StartsWith("{\"__metadata__\":{\"format\":\"pt\"},\"z\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},", header);
        Assert.Equal(header.TrimEnd(' ').Length + (8 - header.TrimEnd(' ').Length % 8) % 8, header.Length);
    }

    [Fact]
    public void EscapesNamesAndMetadataAsSerdeJsonDoes()
    {
        string path = Path.Combine(_dir, "names.safetensors");
        string odd = "w\"\\\u0001é\n";
        SafetensorsWriter.Write(path, [SafetensorsEntry.FromFloat32(odd, [1], [2f])], new Dictionary<string, string> { ["k\t"] = "ü" });
        string header = Encoding.UTF8.GetString(File.ReadAllBytes(path)[8..]);
        Assert.Contains("{\"__metadata__\":{\"k\\t\":\"ü\"},\"w\\\"\\\\\\u0001é\\n\":{", header);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal("ü", file.Metadata["k\t"]);
        Assert.Equal([2f], file[odd].ToFloat32());
    }

    [Fact]
    public void ReadsEveryDtypeAsFloat32()
    {
        string path = Path.Combine(_dir, "dtypes.safetensors");
        float[] expected = [1.5f, -2f, 0f, 3f, 100f];
        var entries = new List<SafetensorsEntry>
        {
            SafetensorsEntry.FromFloat32("f32", [5], expected),
            SafetensorsEntry.FromBytes("f16", DType.F16, [5], expected.SelectMany(v => BitConverter.GetBytes((Half)v)).ToArray()),
            SafetensorsEntry.FromBytes("bf16", DType.BF16, [5], expected.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))).ToArray()),
            SafetensorsEntry.FromBytes("f64", DType.F64, [5], expected.SelectMany(v => BitConverter.GetBytes((double)v)).ToArray()),
            SafetensorsEntry.FromBytes("i64", DType.I64, [5], expected.SelectMany(v => BitConverter.GetBytes((long)v)).ToArray()),
            SafetensorsEntry.FromBytes("i32", DType.I32, [5], expected.SelectMany(v => BitConverter.GetBytes((int)v)).ToArray()),
            SafetensorsEntry.FromBytes("i16", DType.I16, [5], expected.SelectMany(v => BitConverter.GetBytes((short)v)).ToArray()),
            SafetensorsEntry.FromBytes("i8", DType.I8, [5], expected.Select(v => (byte)(sbyte)v).ToArray()),
        };
        SafetensorsWriter.Write(path, entries);
        using var file = SafetensorsFile.Open(path);
        foreach (var name in new[] { "f32", "f16", "bf16", "f64" })
            Assert.Equal(expected, file[name].ToFloat32());
        foreach (var name in new[] { "i64", "i32", "i16", "i8" })
            Assert.Equal([1f, -2f, 0f, 3f, 100f], file[name].ToFloat32());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(33)]
    [InlineData(1023)]
    public void BFloat16WideningMatchesTheScalarShiftOnEveryPath(int n)
    {
        var rng = new Random(n);
        var source = new ushort[n];
        for (int i = 0; i < n; i++) source[i] = (ushort)rng.Next(0, 65536);
        foreach (var simdPath in new[] { SimdPath.Scalar, SimdPath.Vector256, SimdPath.Vector512 })
        {
            var actual = new float[n];
            using (Simd.Force(simdPath)) Widening.BFloat16ToFloat32(source, actual);
            for (int i = 0; i < n; i++)
                Assert.Equal((uint)source[i] << 16, BitConverter.SingleToUInt32Bits(actual[i]));
        }
    }

    [Fact]
    public unsafe void ReadsIntoNativeMemoryAndWritesFromIt()
    {
        string path = Path.Combine(_dir, "native.safetensors");
        using var buffer = new NativeBuffer<float>(37);
        for (int i = 0; i < 37; i++) buffer.Span[i] = i * 0.25f - 3f;
        SafetensorsWriter.Write(path, [SafetensorsEntry.FromPointer("x", DType.F32, [37], buffer.Pointer)]);
        using var file = SafetensorsFile.Open(path);
        using var read = new NativeBuffer<float>(37);
        file["x"].ReadFloat32(read.Pointer);
        Assert.Equal(buffer.Span.ToArray(), read.Span.ToArray());
    }
}
