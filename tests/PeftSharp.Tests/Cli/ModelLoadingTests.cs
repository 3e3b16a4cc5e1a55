using PeftSharp.Cli;
using PeftSharp.Models;
using PeftSharp.Models.Init;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Cli;

/// <summary>The --dtype option of generate, chat and eval, as model.dtype reads it.</summary>
public sealed class ModelLoadingTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("peftsharp-loading").FullName;

    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public void DtypeChoosesTheWeightsInMemory()
    {
        string f32 = Path.Combine(_root, "f32"), bf16 = Path.Combine(_root, "bf16");
        ModelInitializer.Write(f32, new InitModelOptions { Architecture = "llama" });
        ModelInitializer.Write(bf16, new InitModelOptions { Architecture = "llama", Dtype = "bfloat16" });
        using (var m = (CausalLM)ModelLoading.LoaderFor("auto")(f32))
            Assert.All(m.Linears, s => Assert.IsType<DenseLinear>(s.Layer));
        using (var m = (CausalLM)ModelLoading.LoaderFor("bfloat16")(f32))
            Assert.All(m.Linears, s => Assert.Equal(DType.BF16, Assert.IsType<HalfLinear>(s.Layer).Weight.DType));
        using (var m = (CausalLM)ModelLoading.LoaderFor("float16")(bf16))
            Assert.All(m.Linears, s => Assert.Equal(DType.F16, Assert.IsType<HalfLinear>(s.Layer).Weight.DType));
        using (var m = (CausalLM)ModelLoading.LoaderFor("float32")(bf16))
            Assert.All(m.Linears, s => Assert.IsType<DenseLinear>(s.Layer));
        Assert.Contains("--dtype int8", Assert.Throws<PeftSharpException>(() => ModelLoading.LoaderFor("int8")).Message);
    }
}
