namespace PeftSharp.Kernels;

/// <summary>Row gathers: token embedding (wte[id]) and positional embedding add (wpe[position]).</summary>
public static unsafe class Embedding
{
    /// <summary>y[i] (+)= table[ids[i]]. The same call adds positional rows (accumulate, ids = positions).</summary>
    public static void Forward(
        int* ids,      // (N), values in [0, V)
        float* table,  // (V, C)
        float* y,      // (N, C) out (or +=)
        int count, int channels, int tableRows, bool accumulate)
    {
        for (int i = 0; i < count; i++)
        {
            int id = ids[i];
            if ((uint)id >= (uint)tableRows)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Index {id} at position {i} is outside the embedding table of {tableRows} rows.");
            float* src = table + (long)id * channels, dst = y + (long)i * channels;
            if (accumulate) Elementwise.Add(channels, dst, src, dst);
            else Buffer.MemoryCopy(src, dst, (long)channels * sizeof(float), (long)channels * sizeof(float));
        }
    }

    /// <summary>Scatter-add: dtable[ids[i]] += dy[i] (repeated ids accumulate).</summary>
    public static void Backward(int* ids /* (N) */, float* dy /* (N, C) */, float* dtable /* (V, C) += */, int count, int channels)
    {
        for (int i = 0; i < count; i++)
            Elementwise.Axpy(channels, 1f, dy + (long)i * channels, dtable + (long)ids[i] * channels);
    }
}
