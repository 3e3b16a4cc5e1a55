using PeftSharp.Autograd;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>A batch of token sequences, row-major (batch × seqLen), right-padded for training.</summary>
public sealed record TokenBatch(int Batch, int SeqLen, int[] InputIds)
{
    /// <summary>1 for real tokens, 0 for padding (null: all real).</summary>
    public int[]? AttentionMask { get; init; }
    /// <summary>Positions per token (null: 0..SeqLen-1); packing restarts them per example.</summary>
    public int[]? PositionIds { get; init; }
    /// <summary>Example index per token for packed sequences (null: one example per row); attention never crosses examples.</summary>
    public int[]? SegmentIds { get; init; }
    /// <summary>Targets aligned with InputIds (shifted inside, as transformers does); -100 is ignored.</summary>
    public int[]? Labels { get; init; }

    /// <summary>
    /// Targets for logits row (b, t): labels[b, t + 1] (labels default to the input ids with padding
    /// ignored), -100 in the last column and where the next token starts another packed example.
    /// </summary>
    public int[] ShiftedTargets()
    {
        int b = Batch, t = SeqLen;
        var targets = new int[b * t];
        for (int r = 0; r < b; r++)
            for (int i = 0; i < t; i++)
            {
                int at = r * t + i, next = at + 1;
                bool valid = i + 1 < t && (SegmentIds == null || SegmentIds[at] == SegmentIds[next]);
                targets[at] = !valid ? Kernels.CrossEntropy.IgnoreIndex
                    : Labels != null ? Labels[next]
                    : AttentionMask != null && AttentionMask[next] == 0 ? Kernels.CrossEntropy.IgnoreIndex
                    : InputIds[next];
            }
        return targets;
    }
}

/// <summary>
/// A causal language model (GPT-2, Llama, Mistral, Qwen2) on the autograd engine, with
/// transformers' module and parameter names.
/// </summary>
public interface ICausalLM : IDisposable
{
    ModelConfig Config { get; }

    /// <summary>The config.json a saved copy of this model gets (a classifier names its *ForSequenceClassification architecture and labels).</summary>
    System.Text.Json.Nodes.JsonObject SavedConfig() => Config.ToJson();

    /// <summary>Every linear module, in model order, the output layer last; a slot's layer may be replaced (LoRA, 4-bit).</summary>
    IReadOnlyList<LinearSlot> Linears { get; }

    /// <summary>Every parameter: those of the layers in the slots (adapters included) and the rest (embeddings, norms), tied weights once.</summary>
    IEnumerable<Parameter> Parameters { get; }

    /// <summary>Frozen 16-bit weights outside the linear slots (an embedding kept as a view of the checkpoint), which <see cref="Parameters"/> does not list.</summary>
    IReadOnlyList<HalfMatrix> HalfWeights => [];

    /// <summary>Logits (batch·seqLen, vocab).</summary>
    Tensor Forward(Ops ops, TokenBatch batch);

    /// <summary>The causal-LM loss: labels shifted inside, mean over tokens whose label is not -100.</summary>
    Tensor Loss(Ops ops, TokenBatch batch);

    /// <summary>
    /// Scores every position's next token without gradients: <paramref name="losses"/>[r] = -log softmax(logits[r])[targets[r]]
    /// (0 where the target is -100) and <paramref name="argmax"/>[r] = the first index of the row's largest logit; returns
    /// the mean loss over scored rows. A model may compute the logits a block of vocabulary columns at a time and never
    /// hold all of them; this default computes them whole.
    /// </summary>
    unsafe float ScoreNextTokens(Ops ops, TokenBatch batch, ReadOnlySpan<int> targets, Span<float> losses, Span<int> argmax)
    {
        bool grad = ops.Tape.GradEnabled;
        ops.Tape.GradEnabled = false;
        try
        {
            var logits = Forward(ops, batch);
            return NextTokenScores.Score(ops.Tape, targets, losses, argmax, logits.Rows, logits.Columns,
                (_, _, _) => logits.Data, logits.Columns, scratch: false);
        }
        finally
        {
            ops.Tape.GradEnabled = grad;
        }
    }

    /// <summary>
    /// Per-position log-probabilities of given next tokens → (batch·seqLen): log softmax(logits[r])[targets[r]], 0 where the
    /// target is -100, differentiable (DPO, KTO, ORPO). This default holds the logits whole; a model may go by row chunks
    /// in training and by vocabulary blocks without gradients, as its loss does.
    /// </summary>
    Tensor TokenLogProbs(Ops ops, TokenBatch batch, int[] targets) => ops.TokenLogProbs(Forward(ops, batch), targets, overwriteLogits: true);

    /// <summary>
    /// <see cref="TokenLogProbs"/> at the given positions only (b·seqLen + t) → (positions.Length), differentiable: a model may
    /// run its output layer on those rows alone (a preference objective scores completions, never prompts). This default
    /// scores every position and gathers. With <paramref name="temperature"/> ≠ 1 the logits are divided by it first, as TRL's
    /// GRPO computes the log-probs of completions sampled at that temperature.
    /// </summary>
    Tensor TokenLogProbsAt(Ops ops, TokenBatch batch, int[] positions, int[] targets, float temperature = 1f)
    {
        if (temperature != 1f) throw new PeftSharpException($"{GetType().Name}: log-probs at a temperature other than 1 are not supported by this model.");
        int rows = batch.Batch * batch.SeqLen;
        var all = new int[rows];
        Array.Fill(all, Kernels.CrossEntropy.IgnoreIndex);
        for (int i = 0; i < positions.Length; i++) all[positions[i]] = targets[i];
        var logps = TokenLogProbs(ops, batch, all);
        return Ops.Reshape(ops.GatherRows(Ops.Reshape(logps, rows, 1), positions), positions.Length);
    }

    /// <summary>Starts a KV-cache decoding session for <paramref name="batch"/> sequences of up to <paramref name="maxTokens"/> tokens.</summary>
    IDecodeSession StartDecoding(int batch, int maxTokens);
}

/// <summary>Incremental decoding with a KV cache.</summary>
public interface IDecodeSession : IDisposable
{
    int VocabSize { get; }

    /// <summary>
    /// Appends <paramref name="count"/> tokens to every sequence (tokens: batch × count, row-major;
    /// mask: 0 marks left padding, which no later token attends to and which takes no position) and
    /// writes each sequence's next-token logits (batch × vocab) into <paramref name="lastLogits"/>.
    /// </summary>
    void Append(ReadOnlySpan<int> tokens, ReadOnlySpan<int> mask, int count, Span<float> lastLogits);
}

/// <summary>
/// A decoding session whose rows advance independently (continuous batching): a row joins by a prefill of its prompt into
/// a free row, decodes one token per step alongside the others, and leaves (<see cref="ResetRow"/>) between steps. Each
/// row may use its own adapter (PEFT's mixed-batch forward): the base GEMMs are shared, each row adds its own B·A.
/// </summary>
public interface IBatchDecodeSession : IDecodeSession
{
    /// <summary>Rows (sequences) the session holds.</summary>
    int Rows { get; }

    /// <summary>Most tokens one row can cache (prompt and generated).</summary>
    int MaxTokens { get; }

    /// <summary>Tokens cached in <paramref name="row"/>.</summary>
    int RowLength(int row);

    /// <summary>Empties a row so that another sequence can use it.</summary>
    void ResetRow(int row);

    /// <summary>
    /// Appends <paramref name="count"/> real tokens to each of <paramref name="rows"/> (tokens: rows × count, row-major), each
    /// row at its own length, row i computed with adapter <paramref name="adapters"/>[i] (null: the base model; a null list:
    /// the active adapters), and writes each row's next-token logits (rows × vocab) into <paramref name="lastLogits"/>.
    /// </summary>
    void AppendRows(ReadOnlySpan<int> rows, ReadOnlySpan<int> tokens, int count, IReadOnlyList<string?>? adapters, Span<float> lastLogits);
}
