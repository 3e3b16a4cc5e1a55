using PeftSharp.Kernels;
using PeftSharp.Tensors;

namespace PeftSharp.Tests.Kernels;

/// <summary>Kernels that split long inputs over the pool give exactly the one-thread results (and one thread agrees with the oracle).</summary>
[Collection(SimdForcingCollection.Name)]
public unsafe class ParallelKernelTests
{
    [Fact]
    public void LongMapsMatchOneThreadBitForBit()
    {
        const int n = 200_003; // not a multiple of the chunk or the vector width
        var rng = new Rng(21);
        float[] x = Random(rng, n), dy = Random(rng, n);
        var (y1, dx1) = Run(1);
        var (y2, dx2) = Run(2);
        Assert.Equal(y1, y2);
        Assert.Equal(dx1, dx2);
        for (int i = 0; i < n; i += 9973) Assert.Equal(Activations.Gelu(x[i]), y1[i], 1e-5f);

        (float[] Y, float[] Dx) Run(int threads)
        {
            int saved = Parallelism.MaxThreads;
            Parallelism.MaxThreads = threads;
            try
            {
                var y = new float[n];
                var dx = new float[n];
                Array.Fill(dx, 0.25f);
                fixed (float* px = x, pdy = dy, py = y, pdx = dx)
                {
                    Activations.GeluForward(px, py, n);
                    Activations.GeluBackward(px, pdy, pdx, n);
                }
                return (y, dx);
            }
            finally
            {
                Parallelism.MaxThreads = saved;
            }
        }
    }

    [Fact]
    public void NormsOverManyRowsMatchOneThreadBitForBit()
    {
        const int rows = 301, c = 257;
        var rng = new Rng(22);
        float[] x = Random(rng, rows * c), w = Random(rng, c), bias = Random(rng, c), dy = Random(rng, rows * c);
        var one = Run(1);
        var two = Run(2);
        for (int i = 0; i < one.Length; i++) Assert.Equal(one[i], two[i]);
        // Row 0 of the LayerNorm output against the definition.
        double mean = 0, variance = 0;
        for (int j = 0; j < c; j++) mean += x[j];
        mean /= c;
        for (int j = 0; j < c; j++) variance += (x[j] - mean) * (x[j] - mean);
        double rstd = 1 / Math.Sqrt(variance / c + 1e-5);
        for (int j = 0; j < c; j++) Assert.Equal((x[j] - mean) * rstd * w[j] + bias[j], one[0][j], 1e-4);

        float[][] Run(int threads)
        {
            int saved = Parallelism.MaxThreads;
            Parallelism.MaxThreads = threads;
            try
            {
                float[] y = new float[rows * c], mean = new float[rows], rstd = new float[rows], dx = new float[rows * c], dw = new float[c], db = new float[c];
                float[] yr = new float[rows * c], rr = new float[rows], dxr = new float[rows * c], dwr = new float[c];
                fixed (float* px = x, pw = w, pb = bias, pdy = dy, py = y, pm = mean, prs = rstd, pdx = dx, pdw = dw, pdb = db)
                fixed (float* pyr = yr, prr = rr, pdxr = dxr, pdwr = dwr)
                {
                    Norms.LayerNormForward(px, pw, pb, pm, prs, py, rows, c, 1e-5f);
                    Norms.LayerNormBackward(px, pw, pm, prs, pdy, pdx, pdw, pdb, rows, c);
                    Norms.RmsNormForward(px, pw, prr, pyr, rows, c, 1e-6f);
                    Norms.RmsNormBackward(px, pw, prr, pdy, pdxr, pdwr, rows, c);
                }
                return [y, mean, rstd, dx, dw, db, yr, rr, dxr, dwr];
            }
            finally
            {
                Parallelism.MaxThreads = saved;
            }
        }
    }

    private static float[] Random(Rng rng, int n)
    {
        var a = new float[n];
        rng.FillNormal(a, 0f, 1f);
        return a;
    }
}
