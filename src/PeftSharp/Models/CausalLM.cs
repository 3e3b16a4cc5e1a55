using PeftSharp.Autograd;
using PeftSharp.Formats;
using PeftSharp.Formats.HfConfig;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Models;

/// <summary>
/// A decoder-only language model on the autograd engine (GPT-2: <see cref="Gpt2Model"/>; Llama,
/// Mistral, Qwen2: <see cref="LlamaModel"/>), built from <see cref="ModelSkeleton"/> so that module
/// and parameter names and shapes are transformers'. One forward path serves training (whole
/// sequences, <see cref="Forward"/>) and decoding (a KV cache, <see cref="StartDecoding"/>): only
/// the attention step differs.
/// </summary>
public abstract unsafe class CausalLM : ICausalLM, IRandomStreams
{
    private readonly Rng _neftuneRng = new(0);
    private readonly WeightSource _weights;
    private readonly List<Parameter> _own = [];
    private readonly List<HalfMatrix> _ownHalf = [];
    private LinearSlot[] _slots = [];

    private protected CausalLM(ModelConfig config, WeightSource weights, int linearsPerLayer)
    {
        Config = config;
        Skeleton = ModelSkeleton.FromConfig(config);
        _weights = weights;
        LinearsPerLayer = linearsPerLayer;
        GradientCheckpointing = weights.Options.GradientCheckpointing;
    }

    public ModelConfig Config { get; }
    public ModelSkeleton Skeleton { get; }
    public IReadOnlyList<LinearSlot> Linears => _slots;

    /// <summary>
    /// Recompute each decoder layer's forward during backward, keeping only the layer inputs
    /// (transformers' gradient_checkpointing). Costs one more forward per step.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    public int LayerCount => Config.LayerCount;
    public int VocabSize => Config.VocabSize;
    private protected int LinearsPerLayer { get; }

    /// <summary>
    /// Every f32 parameter (the layers' in the slots, adapters included, then embeddings and norms),
    /// each once. Frozen 16-bit views (<see cref="HalfLinear"/>, a 16-bit embedding) are not listed.
    /// </summary>
    public IEnumerable<Parameter> Parameters =>
        _slots.SelectMany(s => s.Layer.Parameters).Concat(_own).Distinct(ReferenceEqualityComparer.Instance).Cast<Parameter>();

    /// <summary>The f32 parameters outside the linear slots (embeddings, norms; a tied embedding once).</summary>
    internal IReadOnlyList<Parameter> OwnParameters => _own;

    /// <summary>Frozen 16-bit weights outside the linear slots (an embedding kept as a view of the checkpoint), which <see cref="Parameters"/> does not list.</summary>
    public IReadOnlyList<HalfMatrix> HalfWeights => _ownHalf;

    /// <summary>The parameter with transformers' name <paramref name="name"/>, or null.</summary>
    public Parameter? FindParameter(string name) => Parameters.FirstOrDefault(p => p.Name == name);

    /// <summary>The slot of the linear module named <paramref name="name"/> (`model.layers.0.self_attn.q_proj`).</summary>
    public LinearSlot Slot(string name) => _slots.FirstOrDefault(s => s.Name == name)
        ?? throw new PeftSharpException($"The model has no linear module named '{name}'.");

    /// <summary>
    /// Loads a Hugging Face model folder (or a hub id found in the local cache): config.json and
    /// safetensors weights. BF16/F16 weights of frozen linear layers and embeddings stay views of
    /// the memory-mapped file unless <see cref="LoadOptions.Float32"/> or they are trainable.
    /// </summary>
    public static CausalLM Load(string folderOrHubId, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        string folder = ModelFolder.Resolve(folderOrHubId);
        var config = ModelConfig.Load(folder);
        var checkpoint = SafetensorsCheckpoint.Open(folder);
        var weights = WeightSource.FromCheckpoint(checkpoint, options);
        try
        {
            return Build(config, weights);
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>A model of <paramref name="config"/>'s shape with random weights (normal, std 0.02; norms 1, biases 0).</summary>
    public static CausalLM CreateRandom(ModelConfig config, Rng rng, LoadOptions? options = null) =>
        Build(config, WeightSource.FromRandom(rng, options ?? new LoadOptions()));

    private static CausalLM Build(ModelConfig config, WeightSource weights) => ModelFamily.Of(config).Build(config, weights);

    public Tensor Forward(Ops ops, TokenBatch batch) => _slots[^1].Layer.Forward(ops, FinalHidden(ops, batch));

    /// <summary>The final hidden states (rows, C) of a whole batch, after the last norm.</summary>
    private Tensor FinalHidden(Ops ops, TokenBatch batch)
    {
        Validate(batch);
        var positions = batch.PositionIds ?? DefaultPositions(batch.Batch, batch.SeqLen);
        var context = new SequenceAttention(batch.Batch, batch.SeqLen, positions, batch.AttentionMask, batch.SegmentIds);
        return Hidden(ops, batch.InputIds, context);
    }

    /// <summary>
    /// The causal-LM loss. Without gradients (evaluation) the logits are computed and scored a block of vocabulary
    /// columns at a time (<see cref="ScoreNextTokens"/>), so they are never held whole; in training, a frozen output
    /// layer whose logits would exceed <see cref="LossLogitsBudget"/> goes by row chunks (<see cref="LossChunkRows"/>).
    /// </summary>
    public Tensor Loss(Ops ops, TokenBatch batch)
    {
        if (ops.Tape.GradEnabled)
        {
            var hidden = FinalHidden(ops, batch);
            using var part = StepProfiler.Enter(StepPart.HeadLoss);
            var head = _slots[^1].Layer;
            int chunk = LossChunkRows(hidden.Rows, VocabSize);
            if (chunk < hidden.Rows && !head.Parameters.Any(p => p.RequiresGrad))
                return ops.CrossEntropyInRowChunks(hidden, x => head.Forward(ops, x), batch.ShiftedTargets(), chunk);
            return ops.CrossEntropy(head.Forward(ops, hidden), batch.ShiftedTargets(), overwriteLogits: true);
        }
        int rows = batch.Batch * batch.SeqLen;
        var loss = ops.Tape.NewTensor([1], requiresGrad: false);
        *loss.Data = ScoreNextTokens(ops, batch, batch.ShiftedTargets(), new float[rows], new int[rows]);
        return loss;
    }

    /// <summary>
    /// <see cref="ICausalLM.TokenLogProbs"/> with the loss's memory: the logits whole (in training with their gradient written
    /// over them), or, past <see cref="LossLogitsBudget"/>, by row chunks in training when the output layer is frozen and by
    /// vocabulary blocks (<see cref="ScoreNextTokens"/>) without gradients. Within the budget a no-grad forward takes the
    /// training path's arithmetic, so a reference forward of the same weights gives the policy's log-probs bit for bit.
    /// </summary>
    public Tensor TokenLogProbs(Ops ops, TokenBatch batch, int[] targets)
    {
        int rows = batch.Batch * batch.SeqLen;
        if (targets.Length != rows) throw new ArgumentException($"TokenLogProbs: {targets.Length} targets for {rows} positions.");
        if (ops.Tape.GradEnabled || LossChunkRows(rows, VocabSize) == rows) return HeadLogProbs(ops, FinalHidden(ops, batch), targets);
        var losses = new float[rows];
        ScoreNextTokens(ops, batch, targets, losses, new int[rows]);
        return NegatedLosses(ops, losses);
    }

    /// <summary>
    /// <see cref="ICausalLM.TokenLogProbsAt"/>: the output layer runs on the gathered rows only (a completion's tokens, not its
    /// prompt's), by the same rules as <see cref="TokenLogProbs"/> on that many rows, so a reference forward within the budget
    /// still gives the policy's log-probs bit for bit.
    /// </summary>
    public Tensor TokenLogProbsAt(Ops ops, TokenBatch batch, int[] positions, int[] targets, float temperature = 1f)
    {
        int rows = positions.Length;
        if (targets.Length != rows) throw new ArgumentException($"TokenLogProbsAt: {targets.Length} targets for {rows} positions.");
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "must be positive.");
        if (temperature != 1f && _slots[^1].Base.Bias != null)
            throw new PeftSharpException("log-probs at a temperature other than 1 need an output layer without a bias.");
        // logits / T = head(hidden / T) for a bias-free head: the gathered rows are scaled before it, on every path.
        Tensor Rows() => temperature == 1f ? ops.GatherRows(FinalHidden(ops, batch), positions)
            : ops.Scale(ops.GatherRows(FinalHidden(ops, batch), positions), 1f / temperature);
        if (ops.Tape.GradEnabled || LossChunkRows(rows, VocabSize) == rows) return HeadLogProbs(ops, Rows(), targets);
        var losses = new float[rows];
        var tape = ops.Tape;
        var mark = tape.Arena.Mark();
        try
        {
            ScoreHidden(ops, Rows(), targets, losses, new int[rows]);
        }
        finally
        {
            tape.Arena.Release(mark);
        }
        return NegatedLosses(ops, losses);
    }

    /// <summary>
    /// log softmax(head(hidden))[r, targets[r]] per row, differentiable; a frozen head past the budget goes by row chunks, also
    /// below <see cref="MinLossChunkRows"/> (a preference batch's few hundred completion rows of a 151,936-token vocabulary:
    /// whole logits would be held through the backward, which the loss's single-number gradient never needs).
    /// </summary>
    private Tensor HeadLogProbs(Ops ops, Tensor hidden, int[] targets)
    {
        using var part = StepProfiler.Enter(StepPart.HeadLoss);
        var head = _slots[^1].Layer;
        int chunk = LossChunkRows(hidden.Rows, VocabSize);
        if ((long)hidden.Rows * VocabSize > LossLogitsBudget) chunk = (int)Math.Min(chunk, Math.Max(1, LossLogitsBudget / VocabSize));
        if (chunk < hidden.Rows && !head.Parameters.Any(p => p.RequiresGrad))
            return ops.TokenLogProbsInRowChunks(hidden, x => head.Forward(ops, x), targets, chunk);
        return ops.TokenLogProbs(head.Forward(ops, hidden), targets, overwriteLogits: true);
    }

    private static Tensor NegatedLosses(Ops ops, float[] losses)
    {
        var y = ops.Tape.NewTensor([losses.Length], requiresGrad: false);
        for (int r = 0; r < losses.Length; r++) y.Data[r] = -losses[r];
        return y;
    }

    /// <summary>The final hidden states (batch·seqLen, C) after the last norm (a classification head's input).</summary>
    public Tensor HiddenStates(Ops ops, TokenBatch batch) => FinalHidden(ops, batch);

    /// <summary>Logits a training loss holds at most at once (256 MiB of f32) before it goes by row chunks.</summary>
    public const long LossLogitsBudget = 1L << 26;

    /// <summary>Smallest row chunk: below it, re-packing the output layer's weight for every chunk costs more than it saves.</summary>
    public const int MinLossChunkRows = 512;

    /// <summary>
    /// Rows per chunk of the training loss (<see cref="Ops.CrossEntropyInRowChunks"/>): all of them while their logits fit
    /// <see cref="LossLogitsBudget"/>, else as many as fit, at least <see cref="MinLossChunkRows"/>. A frozen output layer over a
    /// large vocabulary (Qwen2's 151,936 × 2,048 tokens: 1.2 GB of logits) then holds a chunk's logits instead of all of them.
    /// </summary>
    public static int LossChunkRows(int rows, int vocab)
    {
        if ((long)rows * vocab <= LossLogitsBudget) return rows;
        return (int)Math.Min(rows, Math.Max(MinLossChunkRows, LossLogitsBudget / vocab));
    }

    /// <summary>
    /// <see cref="ICausalLM.ScoreNextTokens"/>: when the output layer is a frozen f32 or 16-bit matrix (not wrapped by
    /// an adapter), its logits are computed for a block of vocabulary columns at a time (about 16 MiB) and folded into
    /// an online logsumexp, so evaluation holds one block instead of (rows, vocab) logits.
    /// </summary>
    public float ScoreNextTokens(Ops ops, TokenBatch batch, ReadOnlySpan<int> targets, Span<float> losses, Span<int> argmax)
    {
        var tape = ops.Tape;
        bool grad = tape.GradEnabled;
        tape.GradEnabled = false;
        var mark = tape.Arena.Mark();
        try
        {
            return ScoreHidden(ops, FinalHidden(ops, batch), targets, losses, argmax);
        }
        finally
        {
            tape.Arena.Release(mark);
            tape.GradEnabled = grad;
        }
    }

    /// <summary><see cref="ScoreNextTokens"/> of given final hidden states (rows, C), without gradients.</summary>
    private float ScoreHidden(Ops ops, Tensor hidden, ReadOnlySpan<int> targets, Span<float> losses, Span<int> argmax)
    {
        var tape = ops.Tape;
        bool grad = tape.GradEnabled;
        tape.GradEnabled = false;
        try
        {
            int rows = hidden.Rows, k = hidden.Columns;
            float* x = hidden.Data;
            // The logits of vocabulary columns [column, column + width) straight from the frozen weight's rows.
            NextTokenScores.BlockSource? slice = _slots[^1].Layer switch
            {
                DenseLinear d => (column, width, block) =>
                {
                    Gemm.LinearForward(x, d.Weight.Data + (long)column * k, d.Bias == null ? null : d.Bias.Data + column, block, rows, width, k, d.ProductType(ops));
                    return block;
                },
                HalfLinear h => (column, width, block) =>
                {
                    Gemm.LinearForward(x, h.Weight.Data + (long)column * k, h.Weight.DType, h.Bias == null ? null : h.Bias.Data + column, block, rows, width, k, h.ProductType(ops));
                    return block;
                },
                _ => null,
            };
            if (slice != null) return NextTokenScores.Score(tape, targets, losses, argmax, rows, VocabSize, slice, NextTokenScores.BlockWidth(rows, VocabSize));
            var logits = _slots[^1].Layer.Forward(ops, hidden);
            return NextTokenScores.Score(tape, targets, losses, argmax, rows, VocabSize, (_, _, _) => logits.Data, VocabSize, scratch: false);
        }
        finally
        {
            tape.GradEnabled = grad;
        }
    }


    public IDecodeSession StartDecoding(int batch, int maxTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        CheckSequenceLength(maxTokens);
        return new DecodeSession(this, batch, maxTokens);
    }

    /// <summary>
    /// NEFTune (TRL's neftune_noise_alpha): in training, the input embeddings of a (B, L, d) batch get uniform noise in
    /// ±alpha/√(L·d), L the padded sequence length, as transformers' neftune_post_forward_hook adds it. Null: off.
    /// </summary>
    public double? NeftuneNoiseAlpha { get; set; }

    public void Reseed(ulong key) => _neftuneRng.Reset(Rng.FoldIn(key, Rng.StreamId("neftune")));

    /// <summary>The final hidden states (rows, C) after the last norm.</summary>
    internal Tensor Hidden(Ops ops, int[] ids, AttentionContext context)
    {
        Tensor h;
        using (StepProfiler.Enter(StepPart.Embedding))
        {
            h = Embed(ops, ids, context.Positions);
            if (NeftuneNoiseAlpha is double alpha && ops.Tape.Training && ops.Tape.GradEnabled)
                h = ops.AddUniformNoise(h, (float)(alpha / Math.Sqrt((double)context.Tokens * h.Columns)), _neftuneRng);
        }
        using var part = StepProfiler.Enter(StepPart.NormsActivations);
        ArenaMark? keptAt = null;
        for (int i = 0; i < LayerCount; i++)
        {
            int layer = i;
            if (GradientCheckpointing && ops.Tape.GradEnabled)
            {
                h = ops.Tape.Checkpoint(h, x => Block(ops, layer, x, context));
                continue;
            }
            int nodes = ops.Tape.NodeCount;
            var mark = ops.Tape.Arena.Mark();
            var output = Block(ops, layer, h, context);
            if (ops.Tape.NodeCount == nodes && !output.RequiresGrad)
            {
                // The previous kept output (this layer's input) is not needed either: rewinding to where it
                // starts puts every layer's activations at the same place in the arena.
                var start = keptAt ?? mark;
                h = KeepOnly(ops, output, start, context.Scratch ?? _sequenceScratch);
                keptAt = start;
            }
            else
            {
                h = output;
                keptAt = null;
            }
        }
        return FinalNorm(ops, h);
    }

    /// <summary>The layer-output scratch of whole-sequence forwards (training, evaluation); a decoding session has its own.</summary>
    private readonly LayerOutputScratch _sequenceScratch = new();

    /// <summary>
    /// A layer that recorded no backward node (inference, or a frozen prefix of the model) leaves nothing that
    /// backward could read: its output is kept and every intermediate activation it allocated (and its input,
    /// when that was kept the same way) is released, so a no-grad forward holds one layer's activations at a
    /// time instead of all of them. The copy goes through the context's scratch, so concurrent decoding sessions
    /// on one model share nothing mutable.
    /// </summary>
    private static Tensor KeepOnly(Ops ops, Tensor output, ArenaMark mark, LayerOutputScratch scratch)
    {
        long n = output.Length;
        float* buffer = scratch.Get(n);
        long bytes = n * sizeof(float);
        Buffer.MemoryCopy(output.Data, buffer, bytes, bytes);
        ops.Tape.Arena.Release(mark);
        var kept = ops.Tape.NewTensor(output.Shape, requiresGrad: false);
        Buffer.MemoryCopy(buffer, kept.Data, bytes, bytes);
        return kept;
    }

    internal LinearSlot HeadSlot => _slots[^1];
    internal abstract int KeyValueHeads { get; }
    internal abstract int HeadDim { get; }

    /// <summary>Token (and, for GPT-2, position) embeddings → (rows, C).</summary>
    private protected abstract Tensor Embed(Ops ops, int[] ids, int[] positions);

    /// <summary>One decoder layer: h (rows, C) → h (rows, C).</summary>
    private protected abstract Tensor Block(Ops ops, int layer, Tensor h, AttentionContext context);

    private protected abstract Tensor FinalNorm(Ops ops, Tensor h);

    /// <summary>Throws where the model cannot attend over <paramref name="tokens"/> positions.</summary>
    private protected virtual void CheckSequenceLength(int tokens)
    {
        if (tokens > Config.MaxPositionEmbeddings)
            throw new PeftSharpException($"A sequence of {tokens} tokens exceeds the model's {Config.MaxPositionEmbeddings} positions (max_position_embeddings / n_positions).");
    }

    private protected LinearSlot LayerSlot(int layer, int index) => _slots[layer * LinearsPerLayer + index];

    private protected Parameter Own(Parameter p)
    {
        _own.Add(p);
        return p;
    }

    private protected Parameter Norm(string name, int size, WeightInit init) => Own(_weights.Dense(name, [size], init));

    private protected EmbeddingTable LoadEmbedding(string name, int rows, int columns)
    {
        var half = _weights.Half(name, rows, columns);
        if (half == null) return new EmbeddingTable(Own(_weights.Dense(name, [rows, columns], WeightInit.Normal)), null);
        _ownHalf.Add(half);
        return new EmbeddingTable(null, half);
    }

    /// <summary>Builds a slot for every linear module of the skeleton; the output layer is tied to <paramref name="tiedHead"/> when given.</summary>
    private protected void BuildLinears(EmbeddingTable? tiedHead)
    {
        _slots = Skeleton.Linears.Select(info =>
            new LinearSlot(info, info.IsOutputLayer && tiedHead != null ? tiedHead.AsHead(info) : LoadLinear(info))).ToArray();
    }

    private IBaseLinear LoadLinear(LinearModuleInfo info)
    {
        if (_weights.Options.LinearOverride?.Invoke(info) is { } custom) return custom;
        int fin = info.InFeatures, fout = info.OutFeatures;
        Parameter? Bias() => info.HasBias ? _weights.Dense(info.Name + ".bias", [fout], WeightInit.Zeros) : null;
        if (_weights.Half(info.Name + ".weight", fout, fin, transpose: info.IsConv1D) is { } half) return new HalfLinear(info, half, Bias());
        var w = _weights.Dense(info.Name + ".weight", info.IsConv1D ? [fin, fout] : [fout, fin], WeightInit.Normal, transpose: info.IsConv1D);
        return new DenseLinear(info, w, Bias());
    }

    private void Validate(TokenBatch batch)
    {
        long n = (long)batch.Batch * batch.SeqLen;
        if (batch.Batch < 1 || batch.SeqLen < 1 || batch.InputIds.Length != n)
            throw new ArgumentException($"TokenBatch: {batch.InputIds.Length} input ids for batch {batch.Batch} × seqLen {batch.SeqLen}.");
        foreach (var (array, what) in new[] { (batch.AttentionMask, "AttentionMask"), (batch.PositionIds, "PositionIds"), (batch.SegmentIds, "SegmentIds"), (batch.Labels, "Labels") })
            if (array != null && array.Length != n)
                throw new ArgumentException($"TokenBatch: {what} has {array.Length} entries, not batch × seqLen = {n}.");
        CheckSequenceLength(batch.SeqLen);
    }

    private static int[] DefaultPositions(int batch, int seqLen)
    {
        var positions = new int[batch * seqLen];
        for (int i = 0; i < positions.Length; i++) positions[i] = i % seqLen;
        return positions;
    }

    public void Dispose()
    {
        _sequenceScratch.Dispose();
        foreach (var slot in _slots) slot.Layer.Dispose();
        foreach (var p in _own) p.Dispose();
        DisposeExtra();
        _weights.Dispose();
        GC.SuppressFinalize(this);
    }

    private protected virtual void DisposeExtra() { }
}

/// <summary>A token embedding table: owned f32 (trainable or not) or a frozen 16-bit view widened per lookup.</summary>
internal sealed class EmbeddingTable(Parameter? dense, HalfMatrix? half)
{
    public Parameter? Dense { get; } = dense;
    public HalfMatrix? Half { get; } = half;

    public Tensor Lookup(Ops ops, int[] ids) => Dense != null ? ops.Embedding(ids, Dense) : ops.Embedding(ids, Half!);

    /// <summary>The tied output layer: logits = h·tableᵀ (a bf16 table stays bf16 in the GEMM).</summary>
    public IBaseLinear AsHead(LinearModuleInfo info)
    {
        if (Dense != null) return new DenseLinear(info, Dense, null);
        Half!.Shared = true;
        return new HalfLinear(info, Half, null);
    }
}

/// <summary>The attention step of a decoder layer, after q/k/v projections (and RoPE): whole sequences, or a KV cache.</summary>
internal abstract class AttentionContext(int batch, int tokens, int[] positions)
{
    public int Batch { get; } = batch;
    public int Tokens { get; } = tokens;
    /// <summary>(Batch·Tokens) position of each token.</summary>
    public int[] Positions { get; } = positions;

    /// <summary>Where a no-grad forward copies each kept layer output; null: the model's own (whole-sequence forwards).</summary>
    public LayerOutputScratch? Scratch { get; init; }

    /// <summary>q (B, T, H, D), k and v (B, T, Hkv, D) → (B, T, H, D).</summary>
    public abstract Tensor Attend(Ops ops, int layer, Tensor q, Tensor k, Tensor v);
}

internal sealed class SequenceAttention(int batch, int tokens, int[] positions, int[]? mask, int[]? segments)
    : AttentionContext(batch, tokens, positions)
{
    public override Tensor Attend(Ops ops, int layer, Tensor q, Tensor k, Tensor v) => ops.Attention(q, k, v, mask, segments);
}

/// <summary>A growable native buffer for one forward's kept layer outputs; owned by whoever runs the forward.</summary>
internal sealed unsafe class LayerOutputScratch : IDisposable
{
    private NativeBuffer<float>? _buffer;

    /// <summary>Floats held now.</summary>
    public long Length => _buffer?.Length ?? 0;

    public float* Get(long length)
    {
        if (_buffer == null || _buffer.Length < length)
        {
            _buffer?.Dispose();
            _buffer = new NativeBuffer<float>(length, clear: false);
        }
        return _buffer.Pointer;
    }

    public void Dispose()
    {
        _buffer?.Dispose();
        _buffer = null;
    }
}
