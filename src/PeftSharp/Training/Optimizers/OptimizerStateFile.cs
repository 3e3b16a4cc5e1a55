using System.Globalization;
using PeftSharp.Formats.Safetensors;
using PeftSharp.Tensors;

namespace PeftSharp.Training.Optimizers;

/// <summary>Reads and writes optimizer state as safetensors: one tensor per parameter and buffer ("{param}.exp_avg"), the step and kind in the metadata.</summary>
internal static unsafe class OptimizerStateFile
{
    public static void Write(string path, string kind, long step, IEnumerable<SafetensorsEntry> entries) =>
        SafetensorsWriter.Write(path, entries, new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["optimizer"] = kind,
            ["step"] = step.ToString(CultureInfo.InvariantCulture),
        });

    public static SafetensorsEntry Entry(string name, DType dtype, long length, void* data) =>
        SafetensorsEntry.FromPointer(name, dtype, [length], data);

    /// <summary>Opens a state file written for <paramref name="kind"/> and returns it and its step.</summary>
    public static (SafetensorsFile File, long Step) Open(string path, string kind)
    {
        var file = SafetensorsFile.Open(path);
        if (!file.Metadata.TryGetValue("optimizer", out var k) || k != kind)
        {
            file.Dispose();
            throw new PeftSharpException($"{path}: optimizer state is for '{(k ?? "?")}', not '{kind}'; resume with the same optim.");
        }
        return (file, long.Parse(file.Metadata["step"], CultureInfo.InvariantCulture));
    }

    /// <summary>Copies tensor <paramref name="name"/> (bytes, exactly) into <paramref name="destination"/>.</summary>
    public static void Read(SafetensorsFile file, string name, DType dtype, long length, void* destination)
    {
        if (!file.TryGetTensor(name, out var t))
            throw new PeftSharpException($"{file.Path}: no optimizer state '{name}' (was the checkpoint made with other trainable parameters?).");
        if (t.DType != dtype || t.ElementCount != length)
            throw new PeftSharpException($"{file.Path}: '{name}' is {t}, expected {dtype.SafetensorsName()}[{length}].");
        new ReadOnlySpan<byte>(t.Pointer, checked((int)t.ByteLength)).CopyTo(new Span<byte>(destination, checked((int)t.ByteLength)));
    }
}
