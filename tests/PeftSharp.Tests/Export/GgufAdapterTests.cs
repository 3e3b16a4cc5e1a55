using PeftSharp.Export;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Export;

/// <summary>
/// --lora-only: the adapter alone in llama.cpp's LoRA GGUF, applied by llama.cpp on the base model's GGUF, gives the
/// outputs of the merged GGUF (Llama's q/k lora_b rows un-permuted like the base, GPT-2's Conv1D modules by their
/// linear view).
/// </summary>
[Collection(TrainedModels.Collection)]
public sealed class GgufAdapterTests(TrainedModels models)
{
    [LlamaCppTheory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void Adapter_gguf_on_base_gguf_equals_merged_gguf_in_llama_cpp(string arch)
    {
        var (modelDir, adapterDir) = models.Get(arch);
        int[] prompt = Tokenizer.FromFolder(modelDir).Encode("the best video to watch");
        using var dir = new TempDir();
        string basePath = Path.Combine(dir.Path, "base.gguf"), mergedPath = Path.Combine(dir.Path, "merged.gguf"), loraPath = Path.Combine(dir.Path, "lora.gguf");
        using (var model = CausalLM.Load(modelDir))
        {
            GgufExporter.ExportModel(model, basePath, new GgufExportOptions { Type = GgmlType.F32 });
            using var peft = PeftModel.FromPretrained(model, adapterDir);
            GgufExporter.ExportModel(model, mergedPath, new GgufExportOptions { Type = GgmlType.F32 });
            GgufExporter.ExportAdapter(peft, loraPath, new GgufExportOptions { Type = GgmlType.F32 });
        }
        var lora = GgufFile.Open(loraPath);
        Assert.Equal("adapter", lora.Get<string>("general.type"));
        Assert.Equal("lora", lora.Get<string>("adapter.type"));
        Assert.Equal(16f, lora.Get<float>("adapter.lora.alpha"));
        string attn = arch == "gpt2" ? "blk.0.attn_qkv.weight" : "blk.0.attn_q.weight";
        Assert.Equal([64L, 4], lora.Tensor(attn + ".lora_a").Dimensions);
        Assert.Equal(4L, lora.Tensor(attn + ".lora_b").Dimensions[0]);

        float[] merged, adapted, plain;
        int[] mergedIds, adaptedIds;
        using (var llama = LlamaCpp.Load(mergedPath, 128)) { merged = llama.Prefill(prompt); mergedIds = llama.Greedy(prompt, 32); }
        using (var llama = LlamaCpp.Load(basePath, 128, loraPath: loraPath)) { adapted = llama.Prefill(prompt); adaptedIds = llama.Greedy(prompt, 32); }
        using (var llama = LlamaCpp.Load(basePath, 128)) plain = llama.Prefill(prompt);
        Assert.True(MaxDiff(plain, merged) > 1e-2, $"{arch}: the trained adapter barely changes the logits ({MaxDiff(plain, merged)}); the test would prove nothing");
        Assert.True(MaxDiff(adapted, merged) < 1e-3, $"{arch}: base + lora differs from merged by {MaxDiff(adapted, merged)}");
        Assert.Equal(mergedIds, adaptedIds);
    }

    internal static double MaxDiff(float[] a, float[] b) => a.Zip(b).Max(p => Math.Abs(p.First - p.Second));

    /// <summary>What llama.cpp's LoRA format cannot hold is refused with a message that says what to do instead.</summary>
    [Fact]
    public void Lora_only_refuses_dora_modules_to_save_and_quantized_types()
    {
        var (modelDir, _) = models.Get("llama");
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "x.gguf");
        using (var model = CausalLM.Load(modelDir))
        using (var peft = PeftModel.Wrap(model, new LoraConfig { R = 2, UseDora = true, TargetModules = TargetModules.FromNames(["q_proj"]) }))
        {
            var e = Assert.Throws<PeftSharpException>(() => GgufExporter.ExportAdapter(peft, path));
            Assert.Contains("DoRA", e.Message);
            Assert.Contains("export the merged model", e.Message);
            e = Assert.Throws<PeftSharpException>(() => GgufExporter.ExportAdapter(peft, path, new GgufExportOptions { Type = GgmlType.Q8_0 }));
            Assert.Contains("f32, f16 or bf16", e.Message);
        }
        using (var model = CausalLM.Load(modelDir))
        using (var peft = PeftModel.Wrap(model, new LoraConfig { R = 2, TargetModules = TargetModules.FromNames(["q_proj"]), ModulesToSave = ["lm_head"] }))
        {
            var e = Assert.Throws<PeftSharpException>(() => GgufExporter.ExportAdapter(peft, path));
            Assert.Contains("modules_to_save", e.Message);
        }
        Assert.Empty(Directory.GetFiles(dir.Path));
    }
}
