using PeftSharp.Autograd;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Tensors;

namespace PeftSharp.Training;

/// <summary>
/// What a checkpoint keeps of the model: "what is trainable". LoRA's adapter save implements it (the
/// PEFT adapter files); <see cref="ParameterTrainableState"/> saves trainable parameters by name.
/// </summary>
public interface ITrainableState
{
    /// <summary>Writes the trainable state into the folder <paramref name="directory"/> (it exists).</summary>
    void Save(string directory);

    /// <summary>Restores what <see cref="Save"/> wrote, in place (the same parameter buffers).</summary>
    void Load(string directory);
}

/// <summary>Trainable parameters by name in <c>trainable.safetensors</c> (f32, the exact bytes).</summary>
public sealed unsafe class ParameterTrainableState(IEnumerable<Parameter> parameters, string fileName = ParameterTrainableState.DefaultFileName) : ITrainableState
{
    public const string DefaultFileName = "trainable.safetensors";
    private readonly List<Parameter> _parameters = parameters.Where(p => p.RequiresGrad).ToList();

    public IReadOnlyList<Parameter> Parameters => _parameters;

    public void Save(string directory) =>
        SafetensorsWriter.Write(Path.Combine(directory, fileName),
            _parameters.Select(p => SafetensorsEntry.FromPointer(p.Name, DType.F32, p.Shape.Select(d => (long)d).ToArray(), p.Data)));

    public void Load(string directory)
    {
        string path = Path.Combine(directory, fileName);
        if (!File.Exists(path)) throw new PeftSharpException($"{directory}: no {fileName} (not a checkpoint of this kind of run).");
        using var file = SafetensorsFile.Open(path);
        foreach (var p in _parameters)
        {
            if (!file.TryGetTensor(p.Name, out var t))
                throw new PeftSharpException($"{path}: no tensor '{p.Name}'; the checkpoint was made for other trainable parameters.");
            if (t.DType != DType.F32 || t.ElementCount != p.Length || !t.Shape.SequenceEqual(p.Shape.Select(d => (long)d)))
                throw new PeftSharpException($"{path}: '{p.Name}' is {t}, expected F32{p.ShapeText}.");
            new ReadOnlySpan<byte>(t.Pointer, checked((int)t.ByteLength)).CopyTo(new Span<byte>(p.Data, checked((int)t.ByteLength)));
        }
    }
}

/// <summary>The trainable state and an objective's own state (<see cref="ICheckpointedObjective"/>) in one checkpoint.</summary>
internal sealed class WithObjectiveState(ITrainableState trainable, ICheckpointedObjective objective) : ITrainableState
{
    public void Save(string directory)
    {
        trainable.Save(directory);
        objective.SaveState(directory);
    }

    public void Load(string directory)
    {
        trainable.Load(directory);
        objective.LoadState(directory);
    }
}

/// <summary>
/// The hook for gradient checkpointing: a model that can recompute activations in backward implements
/// this, and the trainer switches it on when training.gradient_checkpointing is set.
/// </summary>
public interface IGradientCheckpointing
{
    bool GradientCheckpointing { get; set; }
}
