using PeftSharp.Export;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Models.Generation;
using PeftSharp.Peft;

namespace PeftSharp.Tests.Export;

/// <summary>
/// Tiny GPT-2, Llama and Qwen2 models with a trained LoRA, exported merged to GGUF: the real llama.cpp tokenizes
/// text from the embedded vocabulary as PeftSharp's tokenizer does, its first-step logits match PeftSharp's, and its
/// greedy continuation equals PeftSharp's generate.
/// </summary>
[Collection(TrainedModels.Collection)]
public sealed class GgufMergedModelTests(TrainedModels models)
{
    public static readonly string[] Texts =
    [
        "Hello world", "the cat sat on the mat.", "  two  spaces and a tab\there", "numbers 12345 and 3.14!",
        "café déjà vu – naïve", "<|im_start|>user\nhi<|im_end|>", "emoji 🙂 ok", "",
    ];

    private const string Prompt = "the best video to watch";

    [LlamaCppTheory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("qwen2")]
    [InlineData("mistral")]
    public void Merged_lora_model_runs_in_llama_cpp_as_in_PeftSharp(string arch)
    {
        var (modelDir, adapterDir) = models.Get(arch);
        var tokenizer = Tokenizer.FromFolder(modelDir);
        string path = Path.Combine(models.Root, arch + "-merged.gguf");
        using var model = CausalLM.Load(modelDir);
        using var peft = PeftModel.FromPretrained(model, adapterDir);
        GgufExporter.ExportModel(model, path, new GgufExportOptions { Type = GgmlType.F32 });

        var file = GgufFile.Open(path);
        Assert.Equal("gpt2", file.Get<string>("tokenizer.ggml.model"));
        Assert.Equal("gpt-2", file.Get<string>("tokenizer.ggml.pre"));
        Assert.Contains("im_start", file.Get<string>("tokenizer.chat_template"));

        using var llama = LlamaCpp.Load(path, contextSize: 128);
        foreach (var text in Texts)
            Assert.True(tokenizer.Encode(text).SequenceEqual(llama.Tokenize(text, addBos: true)),
                $"{arch} '{text}': PeftSharp [{string.Join(",", tokenizer.Encode(text))}] llama.cpp [{string.Join(",", llama.Tokenize(text, addBos: true))}]");

        // llama.cpp recognizes the embedded chat template and renders a conversation as PeftSharp does.
        var conversation = new[] { ("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "bye") };
        var ourTemplate = PeftSharp.Formats.ChatTemplates.ChatTemplate.FromTokenizerConfig(Path.Combine(modelDir, "tokenizer_config.json"));
        Assert.Equal(ourTemplate.Render(conversation.Select(m => new PeftSharp.Formats.ChatTemplates.ChatMessage(m.Item1, m.Item2)).ToList(), addGenerationPrompt: true),
            llama.ApplyChatTemplate(conversation, addAssistant: true));

        int[] prompt = tokenizer.Encode(Prompt);
        var options = new GenerationOptions { MaxNewTokens = 64, EosTokenIds = [] , PadTokenId = 0 };
        using var session = model.StartDecoding(1, prompt.Length + 64);
        var ours = Generator.Generate(session, [prompt], options)[0].Tokens;
        Assert.Equal(64, ours.Length);

        var theirsLogits = llama.Prefill(prompt);
        var ourLogits = FirstLogits(model, prompt);
        double maxDiff = 0;
        for (int i = 0; i < ourLogits.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(ourLogits[i] - theirsLogits[i]));
        Assert.True(maxDiff < (arch == "gpt2" ? 2e-3 : 1e-3), $"{arch}: first-step logits differ by up to {maxDiff}");

        Assert.Equal(ours, llama.Greedy(prompt, 64));
    }

    internal static float[] FirstLogits(ICausalLM model, int[] prompt)
    {
        using var session = model.StartDecoding(1, prompt.Length);
        var logits = new float[session.VocabSize];
        session.Append(prompt, Enumerable.Repeat(1, prompt.Length).ToArray(), prompt.Length, logits);
        return logits;
    }
}
