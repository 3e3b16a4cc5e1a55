using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using Xunit;

namespace PeftSharp.Tests.Peft;

public sealed class AdapterIOTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "peftsharp-adapter-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static byte[] TensorBytes(string file)
    {
        var bytes = File.ReadAllBytes(file);
        return bytes;
    }

    [AssetFact]
    public void Gpt2CausalAdapter_LoadsAndSavesByteForByte()
    {
        string src = TestAssets.Path("adapters", "gpt2-causal-c_attn-c_proj");
        using var model = new FakeCausalLM(FakeCausalLM.LoadConfig("gpt2.json"), shapeOnly: true);
        using var peft = PeftModel.FromPretrained(model, src);
        Assert.Equal(36, peft.LoraLayers.Count());
        Assert.All(peft.LoraLayers, l => Assert.Equal(32.0 / 8, l["default"].Scaling));
        Assert.All(peft.TrainableParameters, p => Assert.Fail($"{p.Name} trains after an inference load"));
        long adapter = 12L * 8 * (768 + 2304) + 12L * 8 * (768 + 768) + 12L * 8 * (3072 + 768);
        long all = 124_439_808 + adapter;
        Assert.Equal((0L, all), peft.CountParameters());
        peft.SaveAdapter(_dir);
        Assert.Equal(TensorBytes(Path.Combine(src, PeftModel.WeightsFileName)), TensorBytes(Path.Combine(_dir, PeftModel.WeightsFileName)));
        var saved = LoraConfig.Load(_dir);
        Assert.Equal("gpt2", saved.BaseModelNameOrPath);
        Assert.True(saved.FanInFanOut);
        Assert.Equal(LoraConfig.Load(src).ToJson().ToJsonString(), saved.ToJson().ToJsonString());
    }

    [AssetFact]
    public void Gpt2SeqClsAdapter_LoadsTheScoreHeadAsModulesToSave()
    {
        string src = TestAssets.Path("adapters", "gpt2-seqcls-c_attn");
        var score = new LinearModuleInfo("score", 768, 6, HasBias: false, IsOutputLayer: true);
        using var model = new FakeCausalLM(FakeCausalLM.LoadConfig("gpt2.json"), shapeOnly: true, new Rng(1), replaceHead: [score]);
        using var peft = PeftModel.FromPretrained(model, src, isTrainable: true);
        var wrapper = Assert.Single(peft.SavedModules);
        Assert.Equal("score", wrapper.Info.Name);
        using (var st = SafetensorsFile.Open(Path.Combine(src, PeftModel.WeightsFileName)))
            Assert.Equal(st["base_model.model.score.weight"].ToFloat32(), wrapper.Copies["default"].Weight.AsSpan().ToArray());
        long lora = 12L * 8 * (768 + 2304);
        Assert.Equal(lora + 6 * 768, peft.CountParameters().Trainable);
        peft.SaveAdapter(_dir);
        Assert.Equal(TensorBytes(Path.Combine(src, PeftModel.WeightsFileName)), TensorBytes(Path.Combine(_dir, PeftModel.WeightsFileName)));
    }

    [AssetFact]
    public void QwenAdapter_LoadsOnAShapeOnlyBaseAndRoundTrips()
    {
        string src = TestAssets.Path("adapters", "qwen2.5-0.5b-instruct-q_proj-v_proj");
        using var model = new FakeCausalLM(FakeCausalLM.LoadConfig("qwen2.5-0.5b-instruct.json"), shapeOnly: true);
        using var peft = PeftModel.FromPretrained(model, src);
        Assert.Equal(48, peft.LoraLayers.Count());
        long adapter = 24L * 8 * ((896 + 896) + (896 + 128));
        Assert.Equal(adapter, peft.LoraLayers.Sum(l => l["default"].ParameterCount));
        Assert.Equal(494_032_768 + adapter, peft.CountParameters().All);
        peft.SaveAdapter(_dir);
        Assert.Equal(TensorBytes(Path.Combine(src, PeftModel.WeightsFileName)), TensorBytes(Path.Combine(_dir, PeftModel.WeightsFileName)));
    }

    [AssetFact]
    public void AdapterForAnotherBase_FailsNamingTheKeyAndBothShapes()
    {
        string qwen = TestAssets.Path("adapters", "qwen2.5-0.5b-instruct-q_proj-v_proj");
        using var deepseek = new FakeCausalLM(FakeCausalLM.LoadConfig("deepseek-r1-distill-qwen-1.5b.json"), shapeOnly: true);
        var e = Assert.Throws<PeftSharpException>(() => PeftModel.FromPretrained(deepseek, qwen));
        Assert.Contains("\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\" has shape [8, 896]", e.Message);
        Assert.Contains("needs [8, 1536]", e.Message);
        Assert.DoesNotContain(deepseek.Linears, s => s.Layer is LoraLinear l && l.HasAdapter("default"));

        using var gpt2 = new FakeCausalLM(FakeCausalLM.LoadConfig("gpt2.json"), shapeOnly: true);
        var copy = Path.Combine(_dir, "qwen-targets-c_attn");
        Directory.CreateDirectory(copy);
        File.Copy(Path.Combine(qwen, PeftModel.WeightsFileName), Path.Combine(copy, PeftModel.WeightsFileName));
        var cfg = LoraConfig.Load(qwen);
        cfg.TargetModules = TargetModules.FromNames(["c_attn"]);
        cfg.Save(copy);
        e = Assert.Throws<PeftSharpException>(() => PeftModel.FromPretrained(gpt2, copy));
        Assert.Contains("\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\"", e.Message);
        Assert.Contains("does not have", e.Message);

        // Its own target modules match nothing in GPT-2: the error names the adapter and the base it was made for.
        e = Assert.Throws<PeftSharpException>(() => PeftModel.FromPretrained(gpt2, qwen));
        Assert.StartsWith($"adapter {qwen} (made for {LoraConfig.Load(qwen).BaseModelNameOrPath}):", e.Message);
        Assert.Contains("matched no module", e.Message);
    }

    [Fact]
    public void TrainedAdapter_SaveLoadSave_IsByteIdentical_AndReproducesTheOutputs()
    {
        var cfg = FakeCausalLM.TinyLlama();
        var rng = new Rng(5);
        using var model = new FakeCausalLM(cfg, shapeOnly: false, rng);
        var config = new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.AllLinear, InitLoraWeights = "false", UseDora = true, Bias = "lora_only" };
        using var peft = PeftModel.Wrap(model, config, rng: rng);
        peft.SaveAdapter(_dir);
        var first = File.ReadAllBytes(Path.Combine(_dir, PeftModel.WeightsFileName));
        using (var st = SafetensorsFile.Open(Path.Combine(_dir, PeftModel.WeightsFileName)))
        {
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", st.Names);
            Assert.Contains("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight", st.Names);
            Assert.Equal("pt", st.Metadata["format"]);
        }
        foreach (var l in peft.LoraLayers) l.AdaptersDisabled = false;
        using var model2 = new FakeCausalLM(cfg, shapeOnly: false, new Rng(5));
        using var reloaded = PeftModel.FromPretrained(model2, _dir, isTrainable: true);
        var again = Path.Combine(_dir, "again");
        reloaded.SaveAdapter(again);
        Assert.Equal(first, File.ReadAllBytes(Path.Combine(again, PeftModel.WeightsFileName)));
        Assert.Equal(peft.CountParameters(), reloaded.CountParameters());
    }
}
