using System.Text.Json;

namespace PeftSharp.Formats.Tokenizers;

/// <summary>A Hugging Face post-processor: adds special tokens (bos/eos) around an encoded sequence.</summary>
internal abstract class PostProcessor
{
    /// <summary>The ids to put before and after a single sequence when special tokens are added.</summary>
    public abstract void SingleAffixes(List<int> prefix, List<int> suffix);

    public static PostProcessor? FromJson(JsonElement e, string file)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = Json.String(e, "type", file);
        return type switch
        {
            "Sequence" => new SequencePostProcessor(Json.Array(e, "processors", file).EnumerateArray()
                .Select(x => FromJson(x, file) ?? throw new PeftSharpException($"{file}: a null post-processor inside a Sequence.")).ToArray()),
            "ByteLevel" => new NoAffixPostProcessor(),
            "TemplateProcessing" => TemplatePostProcessor.Parse(e, file),
            "BertProcessing" or "RobertaProcessing" => new TemplatePostProcessor([IdOf(e, "cls", file)], [IdOf(e, "sep", file)]),
            _ => throw new PeftSharpException($"{file}: post-processor type '{type}' is not supported (expected TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing or Sequence)."),
        };
    }

    // Bert/Roberta store ["[CLS]", 101].
    private static int IdOf(JsonElement e, string key, string file)
    {
        var pair = Json.Array(e, key, file);
        return pair.GetArrayLength() == 2 && pair[1].ValueKind == JsonValueKind.Number
            ? pair[1].GetInt32()
            : throw new PeftSharpException($"{file}: post-processor '{key}' must be [token, id].");
    }
}

/// <summary>ByteLevel post-processing only trims offsets; the ids are unchanged.</summary>
internal sealed class NoAffixPostProcessor : PostProcessor
{
    public override void SingleAffixes(List<int> prefix, List<int> suffix) { }
}

internal sealed class SequencePostProcessor(PostProcessor[] children) : PostProcessor
{
    public override void SingleAffixes(List<int> prefix, List<int> suffix)
    {
        foreach (var child in children)
        {
            var p = new List<int>();
            var s = new List<int>();
            child.SingleAffixes(p, s);
            prefix.InsertRange(0, p);
            suffix.AddRange(s);
        }
    }
}

/// <summary>TemplateProcessing's "single" template: special tokens around sequence $A.</summary>
internal sealed class TemplatePostProcessor(int[] prefix, int[] suffix) : PostProcessor
{
    public override void SingleAffixes(List<int> p, List<int> s)
    {
        p.AddRange(prefix);
        s.AddRange(suffix);
    }

    public static TemplatePostProcessor Parse(JsonElement e, string file)
    {
        var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
        if (e.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object)
            foreach (var kv in st.EnumerateObject())
                specials[kv.Name] = Json.Array(kv.Value, "ids", file).EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (var piece in Json.Array(e, "single", file).EnumerateArray())
        {
            if (piece.TryGetProperty("Sequence", out _))
            {
                if (seenSequence) throw new PeftSharpException($"{file}: TemplateProcessing 'single' holds more than one sequence.");
                seenSequence = true;
            }
            else if (piece.TryGetProperty("SpecialToken", out var sp))
            {
                string id = Json.String(sp, "id", file);
                if (!specials.TryGetValue(id, out var ids))
                    throw new PeftSharpException($"{file}: TemplateProcessing uses special token '{id}' missing from its special_tokens.");
                (seenSequence ? suffix : prefix).AddRange(ids);
            }
            else throw new PeftSharpException($"{file}: TemplateProcessing 'single' entries must be Sequence or SpecialToken.");
        }
        return new TemplatePostProcessor(prefix.ToArray(), suffix.ToArray());
    }
}
