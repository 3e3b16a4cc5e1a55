using System.CommandLine;
using PeftSharp.Cli;
using PeftSharp.Cli.Commands;
using PeftSharp.Export;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Peft;
using PeftSharp.Quantization;

namespace PeftSharp.Tests.Export;

/// <summary>`peftsharp export gguf` and `peftsharp inspect` on a .gguf, end to end; a 4-bit base exports and runs.</summary>
[Collection(TrainedModels.Collection)]
public sealed class GgufCliTests(TrainedModels models)
{
    private static int Invoke(TextWriter error, params string[] args)
    {
        var root = new RootCommand();
        foreach (var c in CommandCatalog.All()) root.Subcommands.Add(c);
        return CliRunner.Run(root, args, error);
    }

    [Fact]
    public void Export_gguf_command_writes_merged_and_lora_only_files_that_inspect_describes()
    {
        var (modelDir, adapterDir) = models.Get("llama");
        using var dir = new TempDir();
        string merged = Path.Combine(dir.Path, "model.gguf"), lora = Path.Combine(dir.Path, "adapter.gguf");
        var error = new StringWriter();
        Assert.Equal(CliRunner.Ok, Invoke(error, "export", "gguf", "--model", modelDir, "--adapter", adapterDir, "--out", merged, "--type", "q8_0"));
        Assert.Equal(CliRunner.Ok, Invoke(error, "export", "gguf", "--model", modelDir, "--adapter", adapterDir, "--out", lora, "--lora-only", "--type", "f32"));
        Assert.Equal("", error.ToString());

        var output = new StringWriter();
        InspectCommand.Run(merged, null, 8, listModules: true, output);
        string text = output.ToString();
        Assert.Contains("general.architecture = \"llama\"", text);
        Assert.Contains("general.file_type = 7", text);
        Assert.Contains("tokenizer.ggml.tokens = [string x ", text);
        Assert.Contains("blk.1.attn_q.weight q8_0 [64, 64]", text);
        Assert.Contains("output_norm.weight f32 [64]", text);
        output = new StringWriter();
        InspectCommand.Run(lora, null, 8, listModules: true, output);
        Assert.Contains("adapter.type = \"lora\"", output.ToString());
        Assert.Contains("blk.0.ffn_down.weight.lora_b f32 [4, 64]", output.ToString());

        Assert.Equal(CliRunner.UserError, Invoke(error, "export", "gguf", "--model", modelDir, "--out", lora, "--type", "q5_k"));
        Assert.Contains("--type 'q5_k' is not supported", error.ToString());
        Assert.Equal(CliRunner.UserError, Invoke(error, "export", "gguf", "--model", modelDir, "--out", lora, "--lora-only"));
        Assert.Contains("give exactly one --adapter", error.ToString());
    }

    /// <summary>A 4-bit (NF4, double-quantized) checkpoint with a LoRA exports straight to GGUF; llama.cpp's logits equal PeftSharp's on the 4-bit model.</summary>
    [LlamaCppFact]
    public void Four_bit_base_with_adapter_exports_and_matches_PeftSharp()
    {
        var (modelDir, adapterDir) = models.Get("llama");
        using var dir = new TempDir();
        string nf4 = Path.Combine(dir.Path, "nf4"), path = Path.Combine(dir.Path, "nf4-merged.gguf");
        QuantizedCheckpoint.Write(modelDir, nf4, new BitsAndBytesConfig { LoadIn4bit = true, Bnb4bitQuantType = "nf4", Bnb4bitUseDoubleQuant = true, Bnb4bitComputeDtype = "float32" });
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" }) File.Copy(Path.Combine(modelDir, f), Path.Combine(nf4, f), true);
        int[] prompt = Tokenizer.FromFolder(modelDir).Encode("the best video to watch");
        float[] ours;
        using (var model = ModelLoading.Load(nf4))
        {
            Assert.Contains(model.Linears, s => s.Base is Linear4Bit);
            using var peft = PeftModel.FromPretrained(model, adapterDir);
            var result = GgufExporter.ExportModel(model, path, new GgufExportOptions { Type = GgmlType.F32 });
            Assert.Contains(result.Notices, n => n.Contains("4-bit"));
            ours = GgufMergedModelTests.FirstLogits(model, prompt);
        }
        using var llama = LlamaCpp.Load(path, 64);
        double diff = GgufAdapterTests.MaxDiff(ours, llama.Prefill(prompt));
        Assert.True(diff < 1e-3, $"4-bit export: logits differ by {diff}");
    }

    /// <summary>Several --adapter folders are merged together (their deltas add, as PEFT's several active adapters do).</summary>
    [LlamaCppFact]
    public void Several_adapters_merge_into_one_file()
    {
        var (modelDir, adapterDir) = models.Get("qwen2");
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "two.gguf");
        ExportCommand.Run(modelDir, [adapterDir, adapterDir], path, "f32", loraOnly: false, ModelLoading.Load, TextWriter.Null);
        int[] prompt = Tokenizer.FromFolder(modelDir).Encode("the best video to watch");
        float[] one, two;
        using (var model = ModelLoading.Load(modelDir))
        using (var peft = PeftModel.FromPretrained(model, adapterDir))
        {
            one = GgufMergedModelTests.FirstLogits(model, prompt);
            peft.LoadAdapter(adapterDir, "second");
            peft.SetAdapter(PeftModel.DefaultAdapterName, "second");
            two = GgufMergedModelTests.FirstLogits(model, prompt);
        }
        using var llama = LlamaCpp.Load(path, 64);
        var theirs = llama.Prefill(prompt);
        Assert.True(GgufAdapterTests.MaxDiff(one, two) > 1e-2);
        Assert.True(GgufAdapterTests.MaxDiff(two, theirs) < 1e-3, $"two adapters: logits differ by {GgufAdapterTests.MaxDiff(two, theirs)}");
    }
}
