using PeftSharp.Formats.HfConfig;
using PeftSharp.Models;
using PeftSharp.Peft;

namespace PeftSharp.Planning;

/// <summary>What the planner is asked about.</summary>
public sealed record PlanRequest
{
    public int BatchSize { get; init; } = 1;
    public int SeqLength { get; init; } = 512;
    /// <summary>Bytes per element of the stored base weights (bf16 checkpoints: 2; f32: 4).</summary>
    public int StoredBytesPerParameter { get; init; } = 2;
    /// <summary>
    /// The model folder is a pre-quantized bitsandbytes 4-bit checkpoint (its config.json has a quantization_config): QLoRA's
    /// packed codes are views of the memory-mapped file (file-backed pages), not anonymous copies quantized on load.
    /// </summary>
    public bool PreQuantized { get; init; }
    /// <summary>Memory available for training, in bytes.</summary>
    public long MemoryBudget { get; init; } = 16L << 30;
    /// <summary>Number of training examples, when known: small data gets smaller adapters and dropout.</summary>
    public int? DatasetSize { get; init; }
    public int LoraRank { get; init; } = 8;
    public TargetModules? TargetModules { get; init; }
    /// <summary>lora_dropout of the run (null: the recipe's choice for the data size). Dropout keeps a masked copy of each adapter's input.</summary>
    public double? LoraDropout { get; init; }
    /// <summary>
    /// A GRPO run (training.trainer: grpo): <see cref="BatchSize"/> is prompts per micro-batch and <see cref="SeqLength"/> the
    /// prompt length; each micro-batch trains on BatchSize × num_generations sequences of prompt + completion tokens.
    /// </summary>
    public GrpoPlanRequest? Grpo { get; init; }
}

/// <summary>What a GRPO plan needs besides the batch: TRL's GRPOConfig sizes.</summary>
/// <param name="StepsPerGeneration">micro-batches one generation fills (a rollout of StepsPerGeneration × batch × num_generations sequences).</param>
public sealed record GrpoPlanRequest(int NumGenerations, int CompletionLength, int StepsPerGeneration = 1);

/// <summary>Memory of one method, in bytes, by part.</summary>
public sealed record MemoryEstimate(string Method, long TrainableParameters, long Weights, long Gradients, long OptimizerState,
    long Activations, long ActivationsWithCheckpointing)
{
    /// <summary>
    /// GRPO's generation: the decoding session's KV cache, attention scores and prefill activations for the rollout's
    /// sequences. It comes on top of the activations: the training arena's pages stay resident between steps.
    /// </summary>
    public long Rollout { get; init; }

    /// <summary>
    /// The bytes of <see cref="Weights"/> that are pages of the memory-mapped checkpoint rather than anonymous memory: 16-bit
    /// weights used as views of the file, and a pre-quantized checkpoint's 4-bit codes. They are clean file pages, which the
    /// kernel reads in as the layers run and can evict under memory pressure (and read again), so they need not fit.
    /// </summary>
    public long FileBacked { get; init; }

    /// <summary>The process besides its tensors: the .NET runtime, compiled code and the managed heap (<see cref="MemoryPlanner.RuntimeBytes"/>).</summary>
    public long Runtime { get; init; } = MemoryPlanner.RuntimeBytes;

    public long Total => Weights + Gradients + OptimizerState + Activations + Rollout + Runtime;
    public long TotalWithCheckpointing => Weights + Gradients + OptimizerState + ActivationsWithCheckpointing + Rollout + Runtime;

    /// <summary>Anonymous memory (everything but <see cref="FileBacked"/>): what must fit, since without swap it cannot be evicted.</summary>
    public long Anonymous(bool checkpointing) => (checkpointing ? TotalWithCheckpointing : Total) - FileBacked;

    /// <summary>
    /// The expected peak resident set with <paramref name="budget"/> bytes of memory: all the anonymous memory and as much of
    /// the file-backed weights as fits beside it (a mapped base larger than the budget is paged in and out as layers run).
    /// </summary>
    public long PeakResident(long budget, bool checkpointing)
    {
        long anonymous = Anonymous(checkpointing);
        return anonymous + Math.Min(FileBacked, Math.Max(0, budget - anonymous));
    }
}

/// <summary>A recommended recipe.</summary>
public sealed record Recipe(string Method, int R, int LoraAlpha, string TargetModules, double LoraDropout,
    string LearningRateRange, string? Quantization, bool GradientCheckpointing, string Why);

public sealed record Plan(ModelSkeleton Skeleton, PlanRequest Request, IReadOnlyList<MemoryEstimate> Estimates, Recipe Recipe, string PeftLine);

/// <summary>
/// Plans a fine-tuning run from config.json alone: parameter count, the memory of full fine-tuning,
/// LoRA and QLoRA broken down (weights, trainable parameters + gradients + AdamW state, activations
/// with and without gradient checkpointing), and a recommended recipe.
/// Activations are counted as PeftSharp's engine keeps them: every op output of a decoder layer and,
/// during backward, a gradient buffer of the same size, in f32.
/// </summary>
public static class MemoryPlanner
{
    /// <summary>Bits per parameter of NF4 with double quantization (4 bits + 8-bit absmax per 64 + f32 per 256 blocks).</summary>
    public const double Nf4DoubleQuantBits = 4 + 8.0 / 64 + 32.0 / (64 * 256);

    /// <summary>
    /// A training process's memory besides its tensors: the .NET runtime, JIT-compiled code and the managed heap (config,
    /// tokenizer, the tokenized data's index). Measured as the anonymous memory a QLoRA step leaves unexplained by its tensors.
    /// </summary>
    public const long RuntimeBytes = 96L << 20;

    public static Plan Make(ModelConfig config, PlanRequest request)
    {
        var skeleton = ModelSkeleton.FromConfig(config);
        bool smallData = request.DatasetSize is null or < 10_000;
        var targets = request.TargetModules ?? (smallData
            ? TargetModules.FromNames(LoraConfig.DefaultTargetModules.GetValueOrDefault(config.ModelType, ["q_proj", "v_proj"]))
            : TargetModules.AllLinear);
        var lora = new LoraConfig { R = request.LoraRank, LoraAlpha = 2 * request.LoraRank, TargetModules = targets };
        var matched = TargetMatcher.Match(lora, skeleton.Linears, config.ModelType).Modules;
        long loraParams = matched.Sum(m => (long)lora.RankFor(m.Name) * (m.InFeatures + m.OutFeatures));
        long total = skeleton.ParameterCount;
        var grpo = request.Grpo;
        // GRPO trains each micro-batch on batch × num_generations sequences of prompt + completion; the reference forward (beta ≠ 0)
        // runs before the policy's in the same arena, without gradients, and is released: it never raises the peak.
        long tokens = grpo == null ? (long)request.BatchSize * request.SeqLength
            : (long)request.BatchSize * grpo.NumGenerations * (request.SeqLength + grpo.CompletionLength);
        long rollout = grpo == null ? 0 : RolloutBytes(config, (long)grpo.StepsPerGeneration * request.BatchSize * grpo.NumGenerations,
            request.SeqLength, grpo.CompletionLength);

        long linearWeights = skeleton.Linears.Where(l => !l.IsOutputLayer).Sum(l => (long)l.InFeatures * l.OutFeatures);
        long otherParams = total - linearWeights;
        long loraRanks = matched.Sum(m => (long)lora.RankFor(m.Name));
        double dropout = request.LoraDropout ?? RecipeDropout(config, smallData);
        long dropoutFeatures = dropout > 0 ? matched.Sum(m => (long)m.InFeatures) : 0;
        long actFull = ActivationBytes(skeleton.Config, tokens, loraRanks, checkpointing: false, dropoutFeatures: dropoutFeatures);
        long actCkpt = ActivationBytes(skeleton.Config, tokens, loraRanks, checkpointing: true, dropoutFeatures: dropoutFeatures);
        long actBase = ActivationBytes(skeleton.Config, tokens, 0, checkpointing: false, trainableHead: true);
        long actBaseCkpt = ActivationBytes(skeleton.Config, tokens, 0, checkpointing: true, trainableHead: true);

        // A 16-bit checkpoint's weights stay views of the mapped file (f32 ones are too, but the norms and anything widened are copies:
        // only 16-bit storage is counted as file-backed). The embedding, output layer and norms are never quantized.
        int stored = request.StoredBytesPerParameter;
        bool views = stored == 2;
        long codes = (linearWeights + 1) / 2, quantState = (long)Math.Ceiling(linearWeights * (Nf4DoubleQuantBits - 4) / 8);
        long qloraFileBacked = (request.PreQuantized ? codes : 0) + (views ? otherParams * stored : 0);
        var estimates = new List<MemoryEstimate>
        {
            new("full", total, total * 4, total * 4, total * 8, actBase, actBaseCkpt) { Rollout = rollout },
            new("lora", loraParams, total * stored + loraParams * 4, loraParams * 4, loraParams * 8, actFull, actCkpt)
            {
                Rollout = rollout, FileBacked = views ? total * stored : 0,
            },
            // A pre-quantized checkpoint's codes are views of the file; the absmax and its double quantization are read into
            // memory; quantizing on load makes anonymous codes (and releases the 16-bit pages).
            new("qlora", loraParams, codes + quantState + otherParams * stored + loraParams * 4, loraParams * 4, loraParams * 8, actFull, actCkpt)
            {
                Rollout = rollout, FileBacked = qloraFileBacked,
            },
        };

        var recipe = Recommend(config, request, estimates, targets, smallData, codes);
        var peftLine = PeftLine(loraParams, total + loraParams);
        return new Plan(skeleton, request, estimates, recipe, peftLine);
    }

    /// <summary>PEFT's print_trainable_parameters line.</summary>
    public static string PeftLine(long trainable, long all) =>
        $"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {100.0 * trainable / all:F4}";

    private static Recipe Recommend(ModelConfig config, PlanRequest request, List<MemoryEstimate> estimates, TargetModules targets, bool smallData, long codes)
    {
        int r = smallData ? Math.Min(request.LoraRank, 16) : Math.Max(request.LoraRank, 16);
        double dropout = request.LoraDropout ?? RecipeDropout(config, smallData);
        string target = targets.ToString();
        var lora = estimates[1];
        var qlora = estimates[2];
        long budget = request.MemoryBudget;
        if (lora.Total <= budget)
            return new Recipe("lora", r, 2 * r, target, dropout, "1e-4 to 3e-4", null, false,
                "the base fits in memory in its stored dtype, so LoRA trains it without quantization loss");
        if (lora.TotalWithCheckpointing <= budget)
            return new Recipe("lora", r, 2 * r, target, dropout, "1e-4 to 3e-4", null, true,
                "LoRA fits once activations are recomputed in backward (gradient checkpointing)");
        if (qlora.TotalWithCheckpointing <= budget)
            return new Recipe("qlora", r, 2 * r, target, dropout, "1e-4 to 2e-4", "nf4, double quantization, bfloat16 compute", true,
                "the base does not fit in its stored dtype; a 4-bit NF4 base with double quantization does");
        if (request.PreQuantized && qlora.Anonymous(checkpointing: true) <= budget)
            return new Recipe("qlora", r, 2 * r, target, dropout, "1e-4 to 2e-4", "nf4, double quantization, bfloat16 compute", true,
                $"the 4-bit base does not fit, but it stays in the memory-mapped checkpoint: the {Gib(qlora.Anonymous(checkpointing: true))} of anonymous memory fits, "
                + $"and the {Gib(qlora.FileBacked)} of codes and 16-bit weights are read in from disk as the layers run (what the kernel cannot keep is read again every step)");
        if (!request.PreQuantized && qlora.Anonymous(checkpointing: true) - codes <= budget)
            return new Recipe("qlora", r, 2 * r, target, dropout, "1e-4 to 2e-4", "nf4, double quantization, bfloat16 compute", true,
                $"quantized on load, the 4-bit codes ({Gib(codes)}) are anonymous memory and do not fit; write a 4-bit checkpoint first "
                + "(peftsharp quantize) and train from it: its codes stay in the memory-mapped file and are read in from disk as the layers run");
        return new Recipe("qlora", r, 2 * r, target, dropout, "1e-4 to 2e-4", "nf4, double quantization, bfloat16 compute", true,
            $"even QLoRA with gradient checkpointing needs {Gib(qlora.TotalWithCheckpointing)}; reduce seq_len or batch size, or use a machine with more memory");
    }

    public static string Gib(long bytes) => $"{bytes / (double)(1L << 30):F2} GiB";

    /// <summary>
    /// f32 activation bytes of one training step, as the engine's tape arena holds them at its peak (checked
    /// against measured arena high-water marks within 15%): per decoder layer, every op output plus an equal
    /// gradient buffer (the arena keeps both until the step ends) and the per-row statistics of norms and
    /// attention; each LoRA module's rank-r intermediate in forward and in backward, where
    /// <paramref name="loraRanks"/> is the sum of the ranks of all wrapped modules; the embeddings, the final
    /// norm and its gradient, the logits and their gradient. With checkpointing each layer keeps only its
    /// output and that output's gradient, plus one layer's activations (and a copy of its input's gradient)
    /// while it is recomputed in backward.
    /// </summary>
    /// <param name="dropoutFeatures">With lora_dropout &gt; 0: the sum of the wrapped modules' input features. Each adapter's
    /// dropout keeps its masked input and the mask, and backward adds the masked input's gradient.</param>
    public static long ActivationBytes(ModelConfig config, long tokens, long loraRanks, bool checkpointing, bool trainableHead = false,
        long dropoutFeatures = 0)
    {
        long layers = config.LayerCount, hidden = config.HiddenSize;
        long layerForward = PerLayerFloatsPerToken(config) * tokens + LayerStatsFloats(config, tokens);
        long layerFloats = layerForward + PerLayerFloatsPerToken(config) * tokens;
        long loraFloats = 2 * tokens * loraRanks;
        long dropoutForward = 2 * tokens * dropoutFeatures, dropoutBackward = 3 * tokens * dropoutFeatures;
        long outerFloats = OuterFloatsPerToken(config) * tokens;
        var (logits, lossForward, lossSaved) = LossFloats(config, tokens, trainableHead);
        // The peak is where backward holds the most; a row-chunked loss peaks in forward instead, holding one
        // chunk of logits, and is gone (but for the saved input gradient) before backward allocates gradients.
        long forward, backward;
        if (!checkpointing)
        {
            forward = layers * layerForward + loraFloats / 2 + dropoutForward + outerFloats + lossForward;
            backward = layers * layerFloats + loraFloats + dropoutBackward + outerFloats + logits + lossSaved;
        }
        else
        {
            forward = layers * tokens * hidden + outerFloats + lossForward;
            backward = layers * 2 * tokens * hidden + layerFloats + tokens * hidden + (loraFloats + dropoutBackward) / Math.Max(1, layers)
                + outerFloats + logits + lossSaved;
        }
        return 4 * Math.Max(forward, backward);
    }

    /// <summary>
    /// Bytes of GRPO's generation for <paramref name="sequences"/> rows of <paramref name="prompt"/> + <paramref name="completion"/>
    /// tokens, as the decoding session holds them (f32): K and V per layer for every row's whole length, the attention scores of
    /// one step, and the prefill: one layer's op outputs and a few hidden-size vectors (the embeddings, the kept layer output) for
    /// every prompt token, and each row's last logits (checked against the session's measured peak within 15%).
    /// </summary>
    public static long RolloutBytes(ModelConfig config, long sequences, long prompt, long completion)
    {
        long length = prompt + completion;
        long kvWidth = config switch
        {
            LlamaConfig l => (long)l.KeyValueHeadCount * l.HeadDim,
            _ => config.HiddenSize,
        };
        long cache = 2L * config.LayerCount * sequences * length * kvWidth;
        long scores = sequences * config.HeadCount * length;
        long prefill = (PerLayerFloatsPerToken(config) + 4 * config.HiddenSize) * sequences * prompt + sequences * config.VocabSize;
        return 4 * (cache + scores + prefill);
    }

    /// <summary>The recipe's lora_dropout: 0.05–0.1 for small data (GPT-2 0.1), none for large data.</summary>
    private static double RecipeDropout(ModelConfig config, bool smallData) => smallData ? ModelFamily.Of(config).SmallDataDropout : 0.0;

    /// <summary>Floats per token that a decoder layer's forward produces (each op output once).</summary>
    public static long PerLayerFloatsPerToken(ModelConfig config) => ModelFamily.Of(config).LayerFloatsPerToken(config);

    /// <summary>Per-row statistics a decoder layer saves for backward (no gradient): norm mean/rstd and attention logsumexp.</summary>
    private static long LayerStatsFloats(ModelConfig config, long tokens) =>
        tokens * config.HeadCount + ModelFamily.Of(config).NormStatsPerToken * tokens;

    /// <summary>
    /// Floats per token outside the decoder layers: the embedding lookups (GPT-2: token, position and their sum),
    /// the final norm and its gradient (+ statistics), the logits (their gradient is written over them), the loss's per-row statistics.
    /// </summary>
    private static long OuterFloatsPerToken(ModelConfig config)
    {
        long e = config.HiddenSize;
        var family = ModelFamily.Of(config);
        long embeddings = family.EmbeddingOutputs * e;
        long finalNorm = 2 * e + family.FinalNormStats;
        return embeddings + finalNorm + 2;
    }

    /// <summary>
    /// The loss's floats: the logits (their gradient is written over them), held through backward; or, with a row-chunked
    /// loss (a frozen output layer past <see cref="Models.CausalLM.LossLogitsBudget"/>), one chunk's logits and input
    /// gradient plus every row's saved input gradient in forward, and only the latter in backward.
    /// </summary>
    private static (long Logits, long Forward, long Saved) LossFloats(ModelConfig config, long tokens, bool trainableHead)
    {
        long chunk = trainableHead ? tokens : Models.CausalLM.LossChunkRows((int)Math.Min(int.MaxValue, tokens), config.VocabSize);
        if (chunk >= tokens) return (tokens * config.VocabSize, 0, 0);
        long saved = tokens * config.HiddenSize;
        return (0, chunk * config.VocabSize + chunk * config.HiddenSize + saved, saved);
    }
}
