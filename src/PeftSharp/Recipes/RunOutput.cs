using PeftSharp.Config;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using PeftSharp.Training;

namespace PeftSharp.Recipes;

/// <summary>
/// What a training run keeps, whatever its trainer: the checkpoint state (the adapter in PEFT's format plus the
/// trainable bytes, or the trainable parameters) and the final output (the adapter, or the whole model in
/// model.dtype), written by the loop once the last step is done.
/// </summary>
internal sealed class RunOutput(ICausalLM model, PeftModel? peft, RunConfig config, string modelFolder)
{
    public ITrainableState State { get; } = peft != null ? new PeftCheckpointState(peft) : new ParameterTrainableState(model.Parameters);

    /// <summary>The dtype a fully fine-tuned model is saved in (adapters are f32).</summary>
    public DType SaveAs { get; } = peft == null ? FineTuning.SaveDType(config, modelFolder) : DType.F32;

    /// <summary>Bytes of the saved adapter, or of the model's safetensors files.</summary>
    public long Bytes { get; private set; }

    public void SaveFinal(string directory)
    {
        if (peft != null)
        {
            peft.SaveAdapter(directory);
            Bytes = new FileInfo(Path.Combine(directory, PeftModel.WeightsFileName)).Length;
        }
        else
        {
            PeftModel.SaveModel(model, directory, SaveAs, modelFolder);
            Bytes = Directory.EnumerateFiles(directory, "*.safetensors").Sum(f => new FileInfo(f).Length);
        }
    }
}
