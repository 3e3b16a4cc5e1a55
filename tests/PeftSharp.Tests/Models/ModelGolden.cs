using PeftSharp.Formats.Safetensors;
using PeftSharp.Models;

namespace PeftSharp.Tests.Models;

/// <summary>The tiny PyTorch-made fixtures of Golden/models (make_model_goldens.py).</summary>
internal static class ModelGolden
{
    public static string Folder(string name) => Path.Combine(TestAssets.RepoRoot, "tests", "PeftSharp.Tests", "Golden", "models", name);

    public static int[] Ints(SafetensorsFile file, string name) => file[name].ToFloat32().Select(v => (int)v).ToArray();

    /// <summary>The golden batch: 2 × 7 ids, the second row right-padded after 5 tokens, labels -100 on padding.</summary>
    public static TokenBatch Batch(SafetensorsFile golden) => new(2, 7, Ints(golden, "input_ids"))
    {
        AttentionMask = Ints(golden, "attention_mask"),
        Labels = Ints(golden, "labels"),
    };

    public static float MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        float max = 0f;
        for (int i = 0; i < a.Length; i++) max = MathF.Max(max, MathF.Abs(a[i] - b[i]));
        return max;
    }

    /// <summary>[rows, cols] → [cols, rows].</summary>
    public static float[] Transpose(float[] values, int rows, int cols)
    {
        var t = new float[values.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                t[c * rows + r] = values[r * cols + c];
        return t;
    }
}
