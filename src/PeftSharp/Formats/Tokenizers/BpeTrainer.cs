using System.Text;
using System.Text.Json.Nodes;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>A byte-level BPE vocabulary: <see cref="Tokens"/>[id] is the token string; merges in rank order.</summary>
public sealed record BpeVocabulary(IReadOnlyList<string> Tokens, IReadOnlyList<(string Left, string Right)> Merges);

/// <summary>
/// Learns a GPT-2 style byte-level BPE from text, deterministically: words are split with GPT-2's
/// pre-tokenizer regex and mapped to bytes_to_unicode characters; then, as many times as asked, the
/// most frequent adjacent pair (ties: the ordinally smallest (left, right)) is merged everywhere.
/// The 256 byte tokens come first, in GPT-2's order (by character code), then one token per new merge.
/// </summary>
public static class BpeTrainer
{
    public static BpeVocabulary TrainByteLevel(IEnumerable<string> texts, int mergeCount)
    {
        ArgumentNullException.ThrowIfNull(texts);
        ArgumentOutOfRangeException.ThrowIfNegative(mergeCount);
        var wordCounts = new Dictionary<string, int>(StringComparer.Ordinal);
        var spans = new List<(int Start, int End)>();
        foreach (var text in texts)
        {
            spans.Clear();
            ByteLevelPreTokenizer.Gpt2SplitRegex.Matches(text, spans);
            int previous = 0;
            foreach (var (start, end) in spans)
            {
                if (start > previous) Count(wordCounts, text[previous..start]);
                if (end > start) Count(wordCounts, text[start..end]);
                previous = end;
            }
            if (text.Length > previous) Count(wordCounts, text[previous..]);
        }

        var tokens = Enumerable.Range(0, 256).Select(b => ByteLevel.ByteToChar((byte)b).ToString()).Order(StringComparer.Ordinal).ToList();
        var known = new HashSet<string>(tokens, StringComparer.Ordinal);
        var words = wordCounts.OrderBy(w => w.Key, StringComparer.Ordinal)
            .Select(w => (Symbols: w.Key.Select(c => c.ToString()).ToList(), w.Value)).ToList();
        var merges = new List<(string, string)>(mergeCount);
        var pairCounts = new Dictionary<(string, string), int>();
        for (int m = 0; m < mergeCount; m++)
        {
            pairCounts.Clear();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var pair = (symbols[i], symbols[i + 1]);
                    pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + count;
                }
            if (pairCounts.Count == 0) break;
            var best = pairCounts.First();
            foreach (var entry in pairCounts)
                if (entry.Value > best.Value || (entry.Value == best.Value && ComparePairs(entry.Key, best.Key) < 0)) best = entry;
            var (left, right) = best.Key;
            string merged = left + right;
            merges.Add((left, right));
            if (known.Add(merged)) tokens.Add(merged);
            foreach (var (symbols, _) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == left && symbols[i + 1] == right)
                    {
                        symbols[i] = merged;
                        symbols.RemoveAt(i + 1);
                    }
        }
        return new BpeVocabulary(tokens, merges);
    }

    /// <summary>
    /// tokenizer.json (Hugging Face tokenizers' format) for <paramref name="vocabulary"/>: ByteLevel pre-tokenizer
    /// (GPT-2 regex, no prefix space), ByteLevel decoder, the given added tokens (ids after the vocabulary's
    /// in their order unless set), and <paramref name="postProcessor"/> (null: ByteLevel, which adds nothing).
    /// </summary>
    public static JsonObject ToTokenizerJson(BpeVocabulary vocabulary, IReadOnlyList<AddedToken> addedTokens, JsonNode? postProcessor = null)
    {
        var vocab = new JsonObject();
        for (int id = 0; id < vocabulary.Tokens.Count; id++) vocab[vocabulary.Tokens[id]] = id;
        var merges = new JsonArray();
        foreach (var (left, right) in vocabulary.Merges) merges.Add(new JsonArray(left, right));
        var added = new JsonArray();
        foreach (var t in addedTokens)
            added.Add(new JsonObject
            {
                ["id"] = t.Id,
                ["content"] = t.Content,
                ["single_word"] = t.SingleWord,
                ["lstrip"] = t.LStrip,
                ["rstrip"] = t.RStrip,
                ["normalized"] = t.Normalized,
                ["special"] = t.Special,
            });
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = ByteLevelStep(addPrefixSpace: false, trimOffsets: true),
            ["post_processor"] = postProcessor ?? ByteLevelStep(addPrefixSpace: true, trimOffsets: false),
            ["decoder"] = ByteLevelStep(addPrefixSpace: true, trimOffsets: true),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = "",
                ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };
    }

    private static JsonObject ByteLevelStep(bool addPrefixSpace, bool trimOffsets) => new()
    {
        ["type"] = "ByteLevel",
        ["add_prefix_space"] = addPrefixSpace,
        ["trim_offsets"] = trimOffsets,
        ["use_regex"] = true,
    };

    private static void Count(Dictionary<string, int> counts, string word)
    {
        var bytes = Encoding.UTF8.GetBytes(word);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteLevel.ByteToChar(bytes[i]);
        var key = new string(chars);
        counts[key] = counts.GetValueOrDefault(key) + 1;
    }

    private static int ComparePairs((string, string) a, (string, string) b)
    {
        int c = string.CompareOrdinal(a.Item1, b.Item1);
        return c != 0 ? c : string.CompareOrdinal(a.Item2, b.Item2);
    }
}
