using System.Text;
using PeftSharp.Tensors;

namespace PeftSharp.Models.Generation;

/// <summary>Why a sequence stopped: "eos", "stop_string" or "length" in transformers' terms; a served request may also be cancelled.</summary>
public enum FinishReason
{
    Eos,
    StopString,
    Length,
    /// <summary>The caller cancelled (a client disconnected, a timeout, a shutdown); only a serving engine reports it.</summary>
    Cancelled,
}

/// <summary>
/// One generated continuation: its token ids (prompt excluded; the eos or stop-string token included),
/// why it ended, and its decoded text cut before the stop string (null when no decoder was given).
/// </summary>
public sealed record GeneratedSequence(int[] Tokens, FinishReason Reason, string? Text);

/// <summary>
/// Autoregressive decoding over an <see cref="IDecodeSession"/>: a batch of prompts, left-padded and
/// masked, is prefilled in one call; then one token per sequence per step until every sequence has
/// met an eos id, a stop string or max_new_tokens. Finished sequences are fed masked pad tokens until all finish.
/// </summary>
public static class Generator
{
    /// <summary>
    /// Generates a continuation of every prompt. <paramref name="onToken"/>(sequence, token) is called as each
    /// token is chosen, in sequence order within a step. <paramref name="decodeForStops"/> gives a token's text;
    /// it is needed for stop strings and fills <see cref="GeneratedSequence.Text"/>.
    /// </summary>
    public static IReadOnlyList<GeneratedSequence> Generate(IDecodeSession session, IReadOnlyList<int[]> prompts, GenerationOptions options,
        Action<int, int>? onToken = null, Func<int, string>? decodeForStops = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (prompts.Count == 0) return [];
        if (options.StopStrings.Count > 0 && decodeForStops == null)
            throw new ArgumentException("Stop strings need a decoder (decodeForStops) to see the generated text.", nameof(decodeForStops));
        int batch = prompts.Count, vocab = session.VocabSize, pad = options.EffectivePadTokenId;
        int promptLength = 0;
        for (int b = 0; b < batch; b++)
        {
            var p = prompts[b] ?? throw new ArgumentException($"prompt {b} is null.", nameof(prompts));
            if (p.Length == 0) throw new PeftSharpException($"prompt {b} is empty; generation needs at least one token (e.g. the bos token).");
            foreach (int id in p)
                if ((uint)id >= (uint)vocab) throw new PeftSharpException($"prompt {b} holds token id {id}, outside the model's vocabulary of {vocab}.");
            promptLength = Math.Max(promptLength, p.Length);
        }

        var logits = new float[batch * vocab];
        var tokens = new int[batch * promptLength];
        var mask = new int[batch * promptLength];
        for (int b = 0; b < batch; b++)
        {
            var p = prompts[b];
            int offset = b * promptLength, padCount = promptLength - p.Length;
            tokens.AsSpan(offset, padCount).Fill(pad);
            p.CopyTo(tokens, offset + padCount);
            mask.AsSpan(offset + padCount, p.Length).Fill(1);
        }
        var states = new SequenceState[batch];
        for (int b = 0; b < batch; b++) states[b] = new SequenceState(prompts[b], options, vocab, b, decodeForStops != null);
        var sampler = new Sampler(options, vocab);
        if (options.MaxNewTokens == 0) return states.Select(s => s.Result(FinishReason.Length)).ToArray();

        session.Append(tokens, mask, promptLength, logits);
        var stepTokens = new int[batch];
        var stepMask = new int[batch];
        int maxStopLength = options.StopStrings.Count == 0 ? 0 : options.StopStrings.Max(s => s.Length);
        int running = batch;
        for (int step = 0; ; step++)
        {
            for (int b = 0; b < batch; b++)
            {
                var s = states[b];
                if (s.Finished != null)
                {
                    stepTokens[b] = pad;
                    stepMask[b] = 0;
                    continue;
                }
                int next = sampler.Choose(logits.AsSpan(b * vocab, vocab), s);
                s.Add(next);
                onToken?.Invoke(b, next);
                if (Array.IndexOf(options.EosTokenIds, next) >= 0) s.Finished = FinishReason.Eos;
                else if (decodeForStops != null && s.AppendText(decodeForStops(next), options.StopStrings, maxStopLength)) s.Finished = FinishReason.StopString;
                else if (s.Count >= options.MaxNewTokens) s.Finished = FinishReason.Length;
                // A sequence's last token never enters the cache: nothing will be generated after it.
                bool finished = s.Finished != null;
                stepTokens[b] = finished ? pad : next;
                stepMask[b] = finished ? 0 : 1;
                if (finished) running--;
            }
            if (running == 0) break;
            session.Append(stepTokens, stepMask, 1, logits);
        }
        return states.Select(s => s.Result(s.Finished!.Value)).ToArray();
    }

    /// <summary>
    /// Greedy decoding of one prompt (the one greedy decoder: generation metrics use it too): up to
    /// <paramref name="maxNewTokens"/> new tokens, stopping before any of <paramref name="stopIds"/> (not included).
    /// </summary>
    public static int[] GenerateGreedy(ICausalLM model, int[] prompt, int maxNewTokens, IReadOnlyCollection<int> stopIds)
    {
        if (prompt.Length == 0) throw new ArgumentException("Greedy decoding needs at least one prompt token.", nameof(prompt));
        if (maxNewTokens <= 0) return [];
        using var session = model.StartDecoding(1, prompt.Length + maxNewTokens);
        var options = new GenerationOptions { MaxNewTokens = maxNewTokens, EosTokenIds = stopIds.ToArray(), Seed = 0 };
        var result = Generate(session, [prompt], options)[0];
        return result.Reason == FinishReason.Eos ? result.Tokens[..^1] : result.Tokens;
    }

    /// <summary>
    /// The seed of sequence <paramref name="index"/>'s own sampling stream: the options' seed for sequence 0,
    /// so a prompt sampled alone with <c>SequenceSeed(seed, i)</c> gives what it gives as sequence i of a batch.
    /// </summary>
    public static ulong SequenceSeed(ulong seed, int index) => unchecked(seed + (ulong)index * 0x9E3779B97F4A7C15UL);

    /// <summary>What one sequence has produced so far, and the tokens its repetition penalty applies to.</summary>
    internal sealed class SequenceState
    {
        private readonly int[] _generated;
        private readonly bool[]? _present;
        private readonly int[]? _presentList;
        private readonly StringBuilder? _text;
        private int _stopCut = -1;

        public SequenceState(int[] prompt, GenerationOptions options, int vocab, int index, bool decodes)
        {
            _generated = new int[options.MaxNewTokens];
            if (options.RepetitionPenalty != 1.0)
            {
                _present = new bool[vocab];
                _presentList = new int[Math.Min(vocab, prompt.Length + options.MaxNewTokens)];
                foreach (int id in prompt) MarkPresent(id);
            }
            if (decodes) _text = new StringBuilder();
            Rng = new Rng(SequenceSeed(options.Seed, index));
        }

        public Rng Rng { get; }
        public int Count { get; private set; }
        public int PresentCount { get; private set; }
        public FinishReason? Finished { get; set; }
        public ReadOnlySpan<int> PresentTokens => _presentList.AsSpan(0, PresentCount);

        public void Add(int id)
        {
            _generated[Count++] = id;
            if (_present != null) MarkPresent(id);
        }

        private void MarkPresent(int id)
        {
            if (_present![id]) return;
            _present[id] = true;
            _presentList![PresentCount++] = id;
        }

        /// <summary>Appends a token's text; true when a stop string now appears (the text is then cut before it).</summary>
        public bool AppendText(string piece, IReadOnlyList<string> stops, int maxStopLength)
        {
            var text = _text!;
            int searchFrom = Math.Max(0, text.Length - maxStopLength + 1);
            text.Append(piece);
            if (stops.Count == 0) return false;
            int cut = -1;
            string tail = text.ToString(searchFrom, text.Length - searchFrom);
            foreach (var stop in stops)
            {
                int at = tail.IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || at < cut)) cut = at;
            }
            if (cut < 0) return false;
            _stopCut = searchFrom + cut;
            return true;
        }

        public GeneratedSequence Result(FinishReason reason)
        {
            string? text = _text == null ? null : _stopCut >= 0 ? _text.ToString(0, _stopCut) : _text.ToString();
            return new GeneratedSequence(_generated.AsSpan(0, Count).ToArray(), reason, text);
        }
    }

    /// <summary>The per-token choice, with scratch buffers reused across steps and sequences.</summary>
    internal sealed class Sampler(GenerationOptions options, int vocab)
    {
        private readonly float[] _keys = new float[vocab];
        private readonly int[] _order = new int[vocab];

        public int Choose(Span<float> logits, SequenceState state)
        {
            if (options.RepetitionPenalty != 1.0)
                LogitsProcessing.ApplyRepetitionPenalty(logits, state.PresentTokens, (float)options.RepetitionPenalty);
            if (options.IsGreedy) return LogitsProcessing.ArgMax(logits);
            LogitsProcessing.ApplyTemperature(logits, (float)options.Temperature);
            LogitsProcessing.ApplyTopK(logits, options.TopK, _keys);
            LogitsProcessing.ApplyTopP(logits, (float)options.TopP, _keys, _order);
            return LogitsProcessing.SampleSoftmax(logits, state.Rng);
        }
    }
}
