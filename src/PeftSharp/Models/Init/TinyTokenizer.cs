using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using PeftSharp.Formats.ChatTemplates;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Models.Init;

/// <summary>
/// The small byte-level BPE tokenizer that init-model writes: 256 byte tokens plus merges learned from
/// <see cref="TinyCorpus"/>, then the model family's special tokens (ChatML's included) as added tokens,
/// and a tokenizer_config.json carrying the ChatML chat template.
/// </summary>
public sealed class TinyTokenizer
{
    /// <summary>Merges learned from the built-in corpus.</summary>
    public const int MergeCount = 400;

    private static readonly Lazy<BpeVocabulary> BuiltinVocabulary = new(() => BpeTrainer.TrainByteLevel([TinyCorpus.Text], MergeCount));

    private readonly BpeVocabulary _vocabulary;

    private TinyTokenizer(BpeVocabulary vocabulary, string family, AddedToken[] added, string? bos, string eos, string pad, string[] generationEos)
    {
        _vocabulary = vocabulary;
        Family = family;
        AddedTokens = added;
        BosToken = bos;
        EosToken = eos;
        PadToken = pad;
        GenerationEosTokens = generationEos;
    }

    /// <summary>"gpt2", "llama" (also Mistral) or "qwen2": decides the special tokens.</summary>
    public string Family { get; }
    public IReadOnlyList<AddedToken> AddedTokens { get; }
    public string? BosToken { get; }
    public string EosToken { get; }
    public string PadToken { get; }

    /// <summary>The tokens generation stops at (generation_config.json's eos_token_id): the eos token and ChatML's end of turn.</summary>
    public IReadOnlyList<string> GenerationEosTokens { get; }

    /// <summary>Tokens in the vocabulary, added tokens included.</summary>
    public int VocabSize => _vocabulary.Tokens.Count + AddedTokens.Count;

    public int? BosTokenId => BosToken == null ? null : IdOf(BosToken);
    public int EosTokenId => IdOf(EosToken);
    public int PadTokenId => IdOf(PadToken);
    public int[] GenerationEosTokenIds => GenerationEosTokens.Select(IdOf).ToArray();

    public int IdOf(string addedToken) => AddedTokens.Single(t => t.Content == addedToken).Id;

    /// <summary>The tokenizer for a model type: gpt2 (&lt;|endoftext|&gt; as bos, eos and pad), llama/mistral (&lt;s&gt;, &lt;/s&gt;, &lt;pad&gt;, bos added to every text) or qwen2 (no bos, eos &lt;|im_end|&gt;, pad &lt;|endoftext|&gt;).</summary>
    /// <param name="vocabulary">Byte-level BPE learned elsewhere (e.g. from the training text); default: learned from <see cref="TinyCorpus"/>.</param>
    public static TinyTokenizer For(string modelType, BpeVocabulary? vocabulary = null)
    {
        vocabulary ??= BuiltinVocabulary.Value;
        string family = modelType switch
        {
            "gpt2" => "gpt2",
            "llama" or "mistral" => "llama",
            "qwen2" => "qwen2",
            _ => throw new PeftSharpException($"no tokenizer preset for model type '{modelType}' (expected gpt2, llama, mistral or qwen2)."),
        };
        string[] specials = family switch
        {
            "llama" => ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"],
            _ => ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        };
        int first = vocabulary.Tokens.Count;
        var added = specials.Select((s, i) => new AddedToken(first + i, s, Special: true)).ToArray();
        return family switch
        {
            "gpt2" => new TinyTokenizer(vocabulary, family, added, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>", ["<|endoftext|>", "<|im_end|>"]),
            "llama" => new TinyTokenizer(vocabulary, family, added, "<s>", "</s>", "<pad>", ["</s>", "<|im_end|>"]),
            _ => new TinyTokenizer(vocabulary, family, added, null, "<|im_end|>", "<|endoftext|>", ["<|im_end|>", "<|endoftext|>"]),
        };
    }

    /// <summary>tokenizer.json in Hugging Face's format; Llama-family tokenizers prepend &lt;s&gt; through a TemplateProcessing post-processor.</summary>
    public JsonObject ToTokenizerJson()
    {
        JsonNode? post = null;
        if (Family == "llama")
        {
            int bos = IdOf("<s>");
            JsonObject Special() => new() { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } };
            JsonObject Sequence(string id, int typeId) => new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = typeId } };
            post = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special(), Sequence("A", 0)),
                ["pair"] = new JsonArray(Special(), Sequence("A", 0), Special(), Sequence("B", 1)),
                ["special_tokens"] = new JsonObject
                {
                    ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(bos), ["tokens"] = new JsonArray("<s>") },
                },
            };
        }
        return BpeTrainer.ToTokenizerJson(_vocabulary, AddedTokens.ToList(), post);
    }

    /// <summary>tokenizer_config.json: special tokens, the ChatML chat template, and added_tokens_decoder.</summary>
    public JsonObject ToTokenizerConfigJson(int modelMaxLength)
    {
        var decoder = new JsonObject();
        foreach (var t in AddedTokens)
            decoder[t.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["content"] = t.Content,
                ["lstrip"] = t.LStrip,
                ["normalized"] = t.Normalized,
                ["rstrip"] = t.RStrip,
                ["single_word"] = t.SingleWord,
                ["special"] = t.Special,
            };
        return new JsonObject
        {
            ["added_tokens_decoder"] = decoder,
            ["bos_token"] = BosToken,
            ["chat_template"] = ChatTemplate.Builtin("chatml").Source,
            ["clean_up_tokenization_spaces"] = false,
            ["eos_token"] = EosToken,
            ["model_max_length"] = modelMaxLength,
            ["pad_token"] = PadToken,
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            ["unk_token"] = null,
        };
    }

    /// <summary>Writes tokenizer.json and tokenizer_config.json into <paramref name="folder"/>.</summary>
    public void Write(string folder, int modelMaxLength)
    {
        var options = new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        Formats.AtomicFile.WriteAllText(Path.Combine(folder, "tokenizer.json"), ToTokenizerJson().ToJsonString(options) + "\n");
        Formats.PythonJson.WriteFile(Path.Combine(folder, "tokenizer_config.json"), ToTokenizerConfigJson(modelMaxLength));
    }
}
