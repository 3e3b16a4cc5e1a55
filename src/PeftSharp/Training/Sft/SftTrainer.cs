using PeftSharp.Data;
using PeftSharp.Models;

namespace PeftSharp.Training.Sft;

/// <summary>
/// TRL's SFTTrainer: the shared <see cref="Trainer{TBatch}"/> loop with the <see cref="SftObjective"/>
/// (transformers' TrainingArguments / TRL's SFTConfig names and semantics).
/// </summary>
public sealed class SftTrainer
{
    public const string MetricsFileName = Checkpointing.MetricsFileName;
    private readonly Trainer<TokenBatch> _trainer;
    private readonly ICausalLM _model;
    private readonly SftObjective _objective;
    private readonly TrainingArguments _args;

    /// <param name="trainable">What checkpoints save (default: the trainable parameters in trainable.safetensors).</param>
    /// <param name="shuffle">Shuffle the rows every epoch (data.shuffle).</param>
    public SftTrainer(ICausalLM model, TrainingArguments args, SftDataset train, SftDataset? eval = null,
        ITrainableState? trainable = null, IEnumerable<ITrainerCallback>? callbacks = null, bool shuffle = true)
        : this(model, args, new SftObjective(model, train, eval, args.PerDeviceEvalBatchSize),
            new TrainerOptions { Trainable = trainable, Callbacks = callbacks, Shuffle = shuffle })
    {
    }

    public SftTrainer(ICausalLM model, TrainingArguments args, SftObjective objective, TrainerOptions options)
    {
        _model = model;
        _args = args;
        _objective = objective;
        _trainer = new Trainer<TokenBatch>(model, args, objective, options);
    }

    public Trainer<TokenBatch> Trainer => _trainer;
    public int StepsPerEpoch => _trainer.StepsPerEpoch;
    public int TotalSteps => _trainer.TotalSteps;
    public string BestMetricKey => _trainer.BestMetricKey;

    public TrainResult Train(CancellationToken cancellation = default) => _trainer.Train(cancellation);

    /// <summary>Loss, perplexity and mean token accuracy on the evaluation set (no gradients).</summary>
    public LossMetrics Evaluate() => LossEvaluation.Evaluate(_model, _objective.Eval ?? throw new PeftSharpException("training: no evaluation data."), _args.PerDeviceEvalBatchSize);

    /// <summary>checkpoint-N folders of <paramref name="outputDir"/>, by N.</summary>
    public static List<(int Step, string Path)> Checkpoints(string outputDir) => Checkpointing.List(outputDir);

    public static string? LatestCheckpoint(string outputDir) => Checkpointing.Latest(outputDir);
}
