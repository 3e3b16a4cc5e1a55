using System.Text.Json.Nodes;
using PeftSharp.Formats.Tokenizers;

namespace PeftSharp.Tests.Data;

/// <summary>A byte-level BPE written to a temp folder: 256 byte tokens, three merges, and three special tokens.</summary>
internal static class TinyTokenizer
{
    public const int EndOfText = 259, ImStart = 260, ImEnd = 261, Vocab = 262;
    private static readonly Lazy<Tokenizer> Instance = new(Create);

    public static Tokenizer Get() => Instance.Value;

    private static Tokenizer Create()
    {
        string dir = Path.Combine(Path.GetTempPath(), "peftsharp-tiny-tokenizer-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevel.ByteToChar((byte)b).ToString()] = b;
        vocab["he"] = 256;
        vocab["ll"] = 257;
        vocab["\u0120t"] = 258;
        var added = new JsonArray();
        foreach (var (id, content) in new[] { (EndOfText, "<|endoftext|>"), (ImStart, "<|im_start|>"), (ImEnd, "<|im_end|>") })
            added.Add(new JsonObject { ["id"] = id, ["content"] = content, ["special"] = true, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false });
        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray("h e", "l l", "\u0120 t") },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"eos_token": "<|endoftext|>", "bos_token": null, "pad_token": null}""");
        return Tokenizer.FromFolder(dir);
    }
}
