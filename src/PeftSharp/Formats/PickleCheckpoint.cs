namespace PeftSharp.Formats;

/// <summary>
/// PyTorch pickle checkpoints (pytorch_model.bin, *.pt, *.pth). Unpickling can run arbitrary code,
/// so this library never loads them: it refuses with instructions to convert to safetensors.
/// </summary>
public static class PickleCheckpoint
{
    private static readonly string[] Extensions = [".bin", ".pt", ".pth", ".ckpt"];

    /// <summary>True for file names PyTorch uses for pickled weights.</summary>
    public static bool IsPickleName(string path) =>
        Extensions.Contains(Path.GetExtension(path), StringComparer.OrdinalIgnoreCase)
        && !Path.GetFileName(path).Equals("training_args.bin", StringComparison.OrdinalIgnoreCase);

    /// <summary>The pickled weight files in a folder (pytorch_model.bin and its shards, adapter_model.bin...).</summary>
    public static IReadOnlyList<string> FindIn(string folder) =>
        Directory.Exists(folder)
            ? Directory.EnumerateFiles(folder).Where(IsPickleName).Order(StringComparer.Ordinal).ToArray()
            : [];

    /// <summary>The error for a pickle checkpoint: it is not loaded, and here is how to convert it.</summary>
    public static PeftSharpException Refusal(string path)
    {
        string folder = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        string name = Path.GetFileName(path);
        return new PeftSharpException(
            $"{path}: PyTorch pickle checkpoints are not loaded (unpickling can execute arbitrary code). Convert it to safetensors first, e.g.\n" +
            $"  python -c \"import torch; from safetensors.torch import save_file; sd = torch.load('{Path.Combine(folder, name)}', map_location='cpu', weights_only=True); " +
            $"save_file({{k: v.contiguous() for k, v in sd.items()}}, '{Path.Combine(folder, SafetensorsNameFor(name))}', metadata={{'format': 'pt'}})\"\n" +
            "or load the model with transformers and call save_pretrained(dir, safe_serialization=True).");
    }

    private static string SafetensorsNameFor(string name) => name switch
    {
        "pytorch_model.bin" => "model.safetensors",
        "adapter_model.bin" => "adapter_model.safetensors",
        _ => Path.ChangeExtension(name, ".safetensors"),
    };
}
