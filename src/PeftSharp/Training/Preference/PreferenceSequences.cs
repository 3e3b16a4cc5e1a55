using PeftSharp.Autograd;
using PeftSharp.Formats.Tokenizers;
using PeftSharp.Models;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Preference;

/// <summary>A prompt + completion as token ids: the first <see cref="PromptLength"/> ids are the prompt's.</summary>
public sealed record TokenizedSequence(int[] Ids, int PromptLength)
{
    /// <summary>Completion tokens that are targets (a completion token at position 0 has nothing before it to predict it).</summary>
    public int CompletionTargets => Ids.Length - Math.Max(PromptLength, 1);
}

/// <summary>
/// TRL's DPOTrainer.tokenize_row and its max_length truncation: the prompt is encoded without special tokens and keeps its last
/// max_prompt_length tokens; a completion is encoded without special tokens, gets EOS, and keeps its first max_completion_length
/// tokens; then prompt + completion beyond max_length keeps its end (keep_end: the prompt's start goes) or its start.
/// </summary>
public sealed class PreferenceTokenizer(Tokenizer tokenizer, PreferenceOptions options)
{
    public Tokenizer Tokenizer => tokenizer;
    public int PadId => tokenizer.PadTokenId ?? tokenizer.EosTokenId ?? 0;

    public int[] Prompt(string prompt)
    {
        var ids = tokenizer.Encode(prompt, addSpecialTokens: false);
        if (options.MaxPromptLength is int p && ids.Length > p) ids = ids[^p..];
        return ids;
    }

    public TokenizedSequence Sequence(int[] promptIds, string completion) => Combine(promptIds, Completion(completion));

    /// <summary>A completion's ids: without special tokens, EOS appended, its first max_completion_length kept.</summary>
    public int[] Completion(string completion)
    {
        var c = tokenizer.Encode(completion, addSpecialTokens: false);
        if (tokenizer.EosTokenId is int eos) c = [.. c, eos];
        if (options.MaxCompletionLength is int m && c.Length > m) c = c[..m];
        return c;
    }

    /// <summary>Prompt + completion ids, truncated to max_length by truncation_mode.</summary>
    public TokenizedSequence Combine(int[] promptIds, int[] c)
    {
        int[] ids = [.. promptIds, .. c];
        int promptLength = promptIds.Length;
        if (options.MaxLength is int max && ids.Length > max)
        {
            if (options.TruncationMode == "keep_start") { ids = ids[..max]; promptLength = Math.Min(promptLength, max); }
            else { promptLength = Math.Max(0, promptLength - (ids.Length - max)); ids = ids[^max..]; }
        }
        return new TokenizedSequence(ids, promptLength);
    }
}

/// <summary>
/// Sequences right-padded into one model batch, with the next-token targets of their completions (−100 elsewhere) and each
/// position's sequence index (−1 where the position is no target) for sums per sequence.
/// </summary>
public sealed record SequenceBatch(TokenBatch Tokens, int[] Targets, int[] Segments, int[] CompletionTargets)
{
    public int Sequences => CompletionTargets.Length;

    public static SequenceBatch Build(IReadOnlyList<TokenizedSequence> sequences, int padId)
    {
        int b = sequences.Count, t = Math.Max(1, sequences.Max(s => s.Ids.Length));
        var ids = new int[b * t];
        var mask = new int[b * t];
        var targets = new int[b * t];
        var segments = new int[b * t];
        var counts = new int[b];
        Array.Fill(ids, padId);
        Array.Fill(targets, Kernels.CrossEntropy.IgnoreIndex);
        Array.Fill(segments, -1);
        for (int r = 0; r < b; r++)
        {
            var s = sequences[r];
            for (int i = 0; i < s.Ids.Length; i++)
            {
                ids[r * t + i] = s.Ids[i];
                mask[r * t + i] = 1;
                if (i + 1 < s.Ids.Length && i + 1 >= s.PromptLength)
                {
                    targets[r * t + i] = s.Ids[i + 1];
                    segments[r * t + i] = r;
                    counts[r]++;
                }
            }
        }
        var positions = new List<int>();
        for (int i = 0; i < targets.Length; i++) if (segments[i] >= 0) positions.Add(i);
        return new SequenceBatch(new TokenBatch(b, t, ids) { AttentionMask = mask }, targets, segments, counts)
        {
            Positions = [.. positions],
            PositionTargets = [.. positions.Select(i => targets[i])],
            PositionSegments = [.. positions.Select(i => segments[i])],
        };
    }

    /// <summary>The positions that are targets (completion tokens), their targets and their sequences: the output layer runs on these rows only.</summary>
    public int[] Positions { get; private init; } = [];
    public int[] PositionTargets { get; private init; } = [];
    public int[] PositionSegments { get; private init; } = [];

    public long TokenCount => Tokens.AttentionMask!.Sum(m => (long)m);

    /// <summary>Σ log p(completion token) per sequence → (Sequences), differentiable.</summary>
    public Tensor LogProbSums(ICausalLM model, Ops ops) =>
        ops.SumBySegment(model.TokenLogProbsAt(ops, Tokens, Positions, PositionTargets), PositionSegments, Sequences);

    /// <summary>The sums without gradients (reference or KL forward), with the model as it is now.</summary>
    public unsafe double[] LogProbSumsNoGrad(ICausalLM model, Ops ops)
    {
        var tape = ops.Tape;
        bool grad = tape.GradEnabled, training = tape.Training;
        tape.GradEnabled = false;
        tape.Training = false;
        var mark = tape.Arena.Mark();
        try
        {
            var sums = LogProbSums(model, ops);
            var result = new double[Sequences];
            for (int i = 0; i < result.Length; i++) result[i] = sums.Data[i];
            return result;
        }
        finally
        {
            tape.Arena.Release(mark);
            tape.GradEnabled = grad;
            tape.Training = training;
        }
    }
}

/// <summary>How an objective gets the reference model: the policy with its adapters switched off (TRL's use_adapter(model, None)).</summary>
public interface IReferenceModel
{
    /// <summary>Switches the policy into the reference until the returned scope is disposed.</summary>
    IDisposable Enter();
}

/// <summary>The reference as a frozen adapter loaded beside the trained one (TRL's ref_adapter_name): that adapter alone is active in the reference forward.</summary>
public sealed class AdapterReference(Peft.PeftModel peft, string referenceName) : IReferenceModel
{
    public IDisposable Enter()
    {
        var active = peft.ActiveAdapters.ToArray();
        peft.SetAdapter(referenceName);
        return new Scope(() => peft.SetAdapter(active));
    }

    private sealed class Scope(Action exit) : IDisposable
    {
        public void Dispose() => exit();
    }
}

/// <summary>The reference of a <see cref="Peft.PeftModel"/>: the same weights with every adapter disabled (no second copy).</summary>
public sealed class DisabledAdapterReference(Peft.PeftModel peft) : IReferenceModel
{
    public IDisposable Enter()
    {
        bool was = peft.AdaptersDisabled;
        peft.AdaptersDisabled = true;
        return new Scope(() => peft.AdaptersDisabled = was);
    }

    private sealed class Scope(Action exit) : IDisposable
    {
        public void Dispose() => exit();
    }
}
