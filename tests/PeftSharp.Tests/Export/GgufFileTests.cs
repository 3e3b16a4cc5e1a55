using System.Text;
using PeftSharp.Formats.Gguf;

namespace PeftSharp.Tests.Export;

/// <summary>The GGUF reader and writer: a round trip of every value type, and clear errors for malformed files.</summary>
public sealed class GgufFileTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Sample(string name = "sample.gguf")
    {
        var w = new GgufWriter();
        w.Add("general.architecture", "llama");
        w.Add("u8", new GgufValue(GgufValueType.UInt8, (byte)7));
        w.Add("i16", new GgufValue(GgufValueType.Int16, (short)-3));
        w.Add("u32", 42u);
        w.Add("f32", 0.5f);
        w.Add("b", true);
        w.Add("u64", GgufValue.Of(1UL << 40));
        w.Add("f64", new GgufValue(GgufValueType.Float64, 2.25));
        w.Add("s", "héllo");
        w.Add("strings", GgufValue.Array(["a", "", "ü"]));
        w.Add("ints", GgufValue.Array([1, -2, 3]));
        var values = Enumerable.Range(0, 64).Select(i => i * 0.25f - 3f).ToArray();
        w.AddTensor("t.weight", [32, 2], GgmlType.F32, s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())));
        w.AddTensor("v", [3], GgmlType.F16, s => s.Write(new byte[6]));
        string path = Path.Combine(_dir.Path, name);
        w.Write(path);
        return path;
    }

    [Fact]
    public void Round_trips_metadata_and_tensors()
    {
        var f = GgufFile.Open(Sample());
        Assert.Equal(3u, f.Version);
        Assert.Equal("llama", f.Get<string>("general.architecture"));
        Assert.Equal((byte)7, f.Get<byte>("u8"));
        Assert.Equal((short)-3, f.Get<short>("i16"));
        Assert.Equal(42u, f.Get<uint>("u32"));
        Assert.Equal(0.5f, f.Get<float>("f32"));
        Assert.True(f.Get<bool>("b"));
        Assert.Equal(1UL << 40, f.Get<ulong>("u64"));
        Assert.Equal(2.25, f.Get<double>("f64"));
        Assert.Equal("héllo", f.Get<string>("s"));
        Assert.Equal(["a", "", "ü"], f.Get<string[]>("strings"));
        Assert.Equal([1, -2, 3], f.Get<int[]>("ints"));
        var t = f.Tensor("t.weight");
        Assert.Equal([32L, 2], t.Dimensions);
        Assert.Equal(0, (t.Offset - f.DataOffset) % 32);
        Assert.Equal(Enumerable.Range(0, 64).Select(i => i * 0.25f - 3f), f.ReadFloat32("t.weight"));
        Assert.Equal(new float[3], f.ReadFloat32("v"));
        Assert.Equal(0, (f.Tensor("v").Offset - f.DataOffset) % 32);
    }

    private string Corrupt(Action<byte[]> change, string name)
    {
        var bytes = File.ReadAllBytes(Sample());
        change(bytes);
        string path = Path.Combine(_dir.Path, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Offset of the last tensor info's type field: name "v" is the second tensor; its info ends type(4) + offset(8) before the data section padding.</summary>
    private static int IndexOf(byte[] bytes, string text) => bytes.AsSpan().IndexOf(Encoding.UTF8.GetBytes(text));

    [Fact]
    public void Malformed_files_get_errors_that_say_where_and_what()
    {
        var e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(Corrupt(b => b[0] = (byte)'X', "magic.gguf")));
        Assert.Contains("not a GGUF file", e.Message);
        Assert.Contains("magic.gguf", e.Message);

        e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(Corrupt(b => b[4] = 9, "version.gguf")));
        Assert.Contains("GGUF version 9 is not supported", e.Message);

        var whole = File.ReadAllBytes(Sample());
        string cut = Path.Combine(_dir.Path, "cut.gguf");
        File.WriteAllBytes(cut, whole[..20]);
        e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(cut));
        Assert.Contains("the file ends at byte 20 while reading the metadata count at offset 16", e.Message);

        File.WriteAllBytes(cut, whole[..120]);
        e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(cut));
        Assert.Contains("corrupt", e.Message);

        File.WriteAllBytes(cut, whole[..^30]); // the data section keeps t.weight (256 bytes) but not all of v
        e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(cut));
        Assert.Contains("tensor 'v'", e.Message);
        Assert.Contains("past the end of the file", e.Message);

        // The value type of "u32" (right after its key) becomes 99.
        e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(Corrupt(b => b[IndexOf(b, "u32") + 3] = 99, "vtype.gguf")));
        Assert.Contains("metadata 'u32' has value type 99", e.Message);

        // Tensor "v": name, n_dims (4), one dim (8), then its ggml type.
        e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(Corrupt(b => b[IndexOf(b, "\u0001\0\0\0\0\0\0\0v") + 9 + 4 + 8] = 77, "ttype.gguf")));
        Assert.Contains("tensor 'v'", e.Message);
        Assert.Contains("ggml type 77, which is not a known ggml type", e.Message);

        // Tensor "v"'s data offset moves past the end.
        e = Assert.Throws<PeftSharpException>(() => GgufFile.Open(Corrupt(b => b[IndexOf(b, "\u0001\0\0\0\0\0\0\0v") + 9 + 4 + 8 + 4 + 1] = 0x40, "offset.gguf")));
        Assert.Contains("past the end of the file", e.Message);
    }

    [Fact]
    public void A_failing_tensor_leaves_no_file_behind()
    {
        var w = new GgufWriter();
        w.Add("general.architecture", "llama");
        w.AddTensor("bad", [32], GgmlType.F32, s => s.Write(new byte[12]));
        string path = Path.Combine(_dir.Path, "torn.gguf");
        var e = Assert.Throws<InvalidOperationException>(() => w.Write(path));
        Assert.Contains("expected exactly 128 bytes", e.Message);
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void Inspect_command_refuses_a_corrupt_gguf_with_exit_code_1()
    {
        string path = Corrupt(b => b[IndexOf(b, "\u0001\0\0\0\0\0\0\0v") + 9 + 4 + 8] = 77, "cli.gguf");
        var root = new System.CommandLine.RootCommand();
        root.Subcommands.Add(PeftSharp.Cli.Commands.InspectCommand.Create());
        var error = new StringWriter();
        Assert.Equal(PeftSharp.Cli.CliRunner.UserError, PeftSharp.Cli.CliRunner.Run(root, ["inspect", "--model", path], error));
        Assert.Contains("not a known ggml type", error.ToString());
    }

    /// <summary>transformers' {% generation %} tags, unknown to llama.cpp, are rewritten so the template renders the same text.</summary>
    [Fact]
    public void Chat_template_generation_tags_are_rewritten_without_changing_the_rendering()
    {
        var original = PeftSharp.Formats.ChatTemplates.ChatTemplate.Builtin("chatml").Source;
        Assert.Contains("generation", original);
        string rewritten = PeftSharp.Export.GgufVocabulary.ForLlamaCpp(original);
        Assert.DoesNotContain("{%- generation", rewritten);
        Assert.DoesNotContain("endgeneration", rewritten);
        var messages = new[]
        {
            PeftSharp.Formats.ChatTemplates.ChatMessage.System("be brief"), PeftSharp.Formats.ChatTemplates.ChatMessage.User("hi"),
            PeftSharp.Formats.ChatTemplates.ChatMessage.Assistant("hello\n there"), PeftSharp.Formats.ChatTemplates.ChatMessage.User("bye"),
        };
        foreach (bool prompt in new[] { false, true })
            Assert.Equal(PeftSharp.Formats.ChatTemplates.ChatTemplate.Parse(original).Render(messages, prompt),
                PeftSharp.Formats.ChatTemplates.ChatTemplate.Parse(rewritten).Render(messages, prompt));
    }
}
