using System.Text.Json;
using PeftSharp.Export;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Tests.Export;

/// <summary>
/// Real Hugging Face tokenizers written as GGUF vocabularies and loaded by llama.cpp (vocab only): llama.cpp's
/// tokenization of the shared golden strings equals the reference tokenizers' ids, so the model type (gpt2 / llama),
/// pre-tokenizer name (gpt-2, llama-bpe, qwen2), scores, token types and special-token flags are what llama.cpp needs.
/// </summary>
public class GgufVocabularyTests
{
    [LlamaCppTheory(needsAssets: true)]
    [InlineData("gpt2", "gpt2", "gpt2", "gpt-2")]
    [InlineData("llama3", "llama", "gpt2", "llama-bpe")]
    [InlineData("qwen", "qwen2", "gpt2", "qwen2")]
    [InlineData("llama2", "llama", "llama", "default")]
    [InlineData("mistral-7b", "mistral", "llama", "default")]
    [InlineData("gpt2-legacy", "gpt2", "gpt2", "gpt-2")]
    public void Llama_cpp_tokenizes_the_exported_vocabulary_as_the_reference(string name, string modelType, string ggmlModel, string pre)
    {
        using var legacy = new TempDir();
        string folder = TestAssets.Path("tokenizers", name.Replace("-legacy", ""));
        if (name.EndsWith("-legacy", StringComparison.Ordinal))
        {
            // GPT-2's folder without tokenizer.json: vocab.json + merges.txt only.
            foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json" }) File.Copy(Path.Combine(folder, f), Path.Combine(legacy.Path, f));
            folder = legacy.Path;
            name = name.Replace("-legacy", "");
        }
        ModelConfig config = modelType == "gpt2" ? new Gpt2Config() : new LlamaConfig(modelType);
        config.VocabSize = VocabSize(TestAssets.Path("tokenizers", name, "tokenizer.json"));
        var vocabulary = GgufVocabulary.FromFolder(folder, config)!;
        Assert.Equal(ggmlModel, vocabulary.Model);
        Assert.Equal(pre, vocabulary.PreTokenizer);

        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "vocab.gguf");
        var writer = new GgufWriter();
        var arch = GgufArchitecture.For(config);
        writer.Add("general.architecture", arch.Name);
        arch.AddHyperparameters(writer);
        vocabulary.AddTo(writer);
        writer.Write(path);

        using var llama = LlamaCpp.Load(path, vocabOnly: true);
        var failures = new List<string>();
        int cases = 0;
        foreach (var line in File.ReadLines(TestAssets.Path("golden", "tokenizers.jsonl")))
        {
            using var doc = JsonDocument.Parse(line);
            var row = doc.RootElement;
            if (row.GetProperty("tokenizer").GetString() != name || !row.GetProperty("add_special_tokens").GetBoolean()) continue;
            string text = row.GetProperty("text").GetString()!;
            var expected = row.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var actual = llama.Tokenize(text, addBos: true);
            cases++;
            // llama.cpp forces "</s>" to a control token in any vocabulary (it is on its end-of-generation list), so
            // with special parsing on it matches it whole where Qwen's reference tokenizer, which holds it as a plain
            // token, splits the text by its regex first. A llama.cpp rule, not the export's: see docs/commands/export.md.
            if (name == "qwen" && text.Contains("</s>", StringComparison.Ordinal)) continue;
            if (!expected.SequenceEqual(actual)) failures.Add($"{JsonSerializer.Serialize(text)}: expected [{string.Join(",", expected)}] got [{string.Join(",", actual)}]");
        }
        Assert.True(cases >= 40, $"only {cases} golden cases for {name}");
        Assert.True(failures.Count == 0, $"{name}: {failures.Count}/{cases} differ:\n{string.Join("\n", failures)}");
    }

    /// <summary>One more than the largest id of the vocabulary and added tokens.</summary>
    private static int VocabSize(string tokenizerJson)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerJson));
        int max = doc.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject().Max(p => p.Value.GetInt32());
        foreach (var t in doc.RootElement.GetProperty("added_tokens").EnumerateArray()) max = Math.Max(max, t.GetProperty("id").GetInt32());
        return max + 1;
    }
}
