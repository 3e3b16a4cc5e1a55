using System.Text;
using LLama;
using LLama.Common;
using LLama.Native;

namespace PeftSharp.Tests.Export;

/// <summary>
/// The real llama.cpp (LLamaSharp's CPU build of libllama) as the judge of exported GGUF files: loads a file,
/// optionally applies a LoRA GGUF, and decodes greedily by token id with flash attention off and an f32 KV cache
/// (llama.cpp's CPU flash-attention path rounds K and V to f16).
/// </summary>
public sealed class LlamaCpp : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly List<LoraAdapter> _adapters = [];

    private LlamaCpp(LLamaWeights weights, LLamaContext context)
    {
        _weights = weights;
        _context = context;
    }

    public static LlamaCpp Load(string ggufPath, int contextSize = 256, string? loraPath = null, bool vocabOnly = false)
    {
        Configure();
        var p = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextSize,
            BatchSize = (uint)contextSize,
            UBatchSize = (uint)contextSize,
            GpuLayerCount = 0,
            // One thread: the models are tiny, and on a busy machine ggml's spinning thread barrier costs more than it gains.
            Threads = 1,
            BatchThreads = 1,
            FlashAttention = false,
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
            VocabOnly = vocabOnly,
        };
        var weights = LLamaWeights.LoadFromFile(p);
        var llama = new LlamaCpp(weights, vocabOnly ? null! : weights.CreateContext(p));
        if (loraPath != null)
        {
            var adapter = weights.NativeHandle.LoadLoraFromFile(loraPath);
            llama._adapters.Add(adapter);
            llama._context.NativeHandle.SetLoraAdapters([(adapter, 1f)]);
        }
        return llama;
    }

    /// <summary>Silences llama.cpp's logging and loads the library (once per process).</summary>
    private static void Configure()
    {
        if (LlamaCppAvailability.Unavailable is { } reason) throw new InvalidOperationException(reason);
    }

    public int VocabSize => _weights.Vocab.Count;

    /// <summary>llama.cpp's rendering of a conversation with the file's chat template (llama_chat_apply_template).</summary>
    public string ApplyChatTemplate(IEnumerable<(string Role, string Content)> messages, bool addAssistant)
    {
        var template = new LLamaTemplate(_weights) { AddAssistant = addAssistant };
        foreach (var (role, content) in messages) template.Add(role, content);
        return Encoding.UTF8.GetString(template.Apply());
    }

    public string? Metadata(string key) => _weights.Metadata.TryGetValue(key, out var v) ? v : null;

    public int[] Tokenize(string text, bool addBos, bool special = true) =>
        _weights.Tokenize(text, addBos, special, Encoding.UTF8).Select(t => (int)t).ToArray();

    /// <summary>Feeds <paramref name="prompt"/> and returns the logits after its last token.</summary>
    public float[] Prefill(IReadOnlyList<int> prompt)
    {
        _context.NativeHandle.MemoryClear(true);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Count; i++) batch.Add(prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
        Check(_context.NativeHandle.Decode(batch));
        return _context.NativeHandle.GetLogitsIth(batch.TokenCount - 1).ToArray();
    }

    /// <summary>Greedy decoding: the prompt, then <paramref name="count"/> argmax tokens (no stop at end of sequence).</summary>
    public int[] Greedy(IReadOnlyList<int> prompt, int count)
    {
        var logits = Prefill(prompt);
        var output = new int[count];
        int position = prompt.Count;
        var batch = new LLamaBatch();
        for (int step = 0; step < count; step++)
        {
            int next = ArgMax(logits);
            output[step] = next;
            if (step == count - 1) break;
            batch.Clear();
            batch.Add(next, position++, LLamaSeqId.Zero, true);
            Check(_context.NativeHandle.Decode(batch));
            logits = _context.NativeHandle.GetLogitsIth(0).ToArray();
        }
        return output;
    }

    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    private static void Check(DecodeResult result)
    {
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {result}");
    }

    public void Dispose()
    {
        _context?.Dispose();
        _weights.Dispose();
    }
}
