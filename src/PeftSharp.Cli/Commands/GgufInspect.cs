using PeftSharp.Formats.Gguf;

namespace PeftSharp.Cli.Commands;

/// <summary>`peftsharp inspect --model FILE.gguf`: a GGUF file's metadata and tensors with their types and shapes.</summary>
public static class GgufInspect
{
    public static void Run(string path, bool listTensors, TextWriter output)
    {
        var file = GgufFile.Open(path);
        long size = new FileInfo(path).Length;
        output.WriteLine($"GGUF v{file.Version}: {file.MetadataInOrder.Count} metadata keys, {file.Tensors.Count} tensors, {size / (1024.0 * 1024.0):F1} MiB (alignment {file.Alignment})");
        output.WriteLine("metadata:");
        foreach (var (key, value) in file.MetadataInOrder) output.WriteLine($"  {key} = {value}");
        var byType = file.Tensors.GroupBy(t => t.Type).OrderBy(g => g.Key).Select(g => $"{GgmlTypes.Name(g.Key)} x {g.Count()}");
        output.WriteLine($"tensor types: {string.Join(", ", byType)}; {file.Tensors.Sum(t => t.ElementCount):N0} values");
        if (!listTensors && file.Tensors.Count > 40)
        {
            output.WriteLine("tensors: (--list-modules lists all)");
            foreach (var t in file.Tensors.Take(12)) output.WriteLine(Line(t));
            output.WriteLine($"  ... {file.Tensors.Count - 12} more");
            return;
        }
        output.WriteLine("tensors:");
        foreach (var t in file.Tensors) output.WriteLine(Line(t));
    }

    private static string Line(GgufTensor t) => $"  {t.Name} {GgmlTypes.Name(t.Type)} [{string.Join(", ", t.Dimensions)}]";
}
