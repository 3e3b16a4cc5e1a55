using PeftSharp.Autograd;
using PeftSharp.Peft;
using PeftSharp.Tensors;
using Xunit;

namespace PeftSharp.Tests.Peft;

public sealed unsafe class WeightedAdapterTests
{
    private static LoraConfig Config(int r, double alpha) => new()
    {
        R = r, LoraAlpha = alpha, InitLoraWeights = "false", TargetModules = TargetModules.FromNames(["q_proj", "o_proj"]),
    };

    private static (FakeCausalLM, PeftModel) TwoAdapters(int r1, int r2)
    {
        var model = new FakeCausalLM(FakeCausalLM.TinyLlama(), shapeOnly: false, new Rng(1));
        var peft = PeftModel.Wrap(model, Config(r1, 4), "a", new Rng(2));
        peft.AddAdapter("b", Config(r2, 3), new Rng(3));
        return (model, peft);
    }

    private static double[] Delta(LoraLinear l, string name)
    {
        var d = new float[l.Info.OutFeatures * l.Info.InFeatures];
        fixed (float* p = d) l.DeltaWeight(name, p);
        return d.Select(v => (double)v).ToArray();
    }

    [Fact]
    public void SeveralAdapters_SetDisableDelete()
    {
        var (model, peft) = TwoAdapters(2, 3);
        using var _ = model;
        using var __ = peft;
        Assert.Equal(["a"], peft.ActiveAdapters);
        var layer = peft.LoraLayers.First();
        Assert.Equal(["a"], layer.ActiveAdapters);
        peft.SetAdapter("a", "b");
        Assert.Equal(["a", "b"], layer.ActiveAdapters);
        peft.AdaptersDisabled = true;
        Assert.True(layer.AdaptersDisabled);
        peft.AdaptersDisabled = false;
        peft.DeleteAdapter("a");
        Assert.Equal(["b"], peft.ActiveAdapters);
        Assert.False(layer.HasAdapter("a"));
        Assert.Throws<PeftSharpException>(() => peft.SetAdapter("a"));
    }

    [Fact]
    public void Cat_DeltaIsTheExactWeightedSum()
    {
        var (model, peft) = TwoAdapters(2, 3);
        using var _ = model;
        using var __ = peft;
        peft.AddWeightedAdapter(["a", "b"], [0.7, 1.5], "cat", "cat");
        Assert.Equal(5, peft.Configs["cat"].R);
        Assert.Equal(5, peft.Configs["cat"].LoraAlpha);
        foreach (var l in peft.LoraLayers)
        {
            var da = Delta(l, "a");
            var db = Delta(l, "b");
            var got = Delta(l, "cat");
            Assert.Equal(1.0, l["cat"].Scaling);
            for (int i = 0; i < got.Length; i++)
            {
                // cat: A rows wᵢ·sᵢ·Aᵢ, B = [Bᵢ]: delta = Σ wᵢ·sᵢ·Bᵢ·Aᵢ = Σ wᵢ·ΔWᵢ.
                double want = 0.7 * da[i] + 1.5 * db[i];
                Assert.True(Math.Abs(got[i] - want) <= 1e-5 * (1 + Math.Abs(want)), $"{l.Info.Name}[{i}]: {got[i]} vs {want}");
            }
        }
    }

    [Fact]
    public void Linear_CombinesAAndBWithSqrtWeights()
    {
        var (model, peft) = TwoAdapters(2, 2);
        using var _ = model;
        using var __ = peft;
        peft.AddWeightedAdapter(["a", "b"], [0.5, 2.0], "lin", "linear");
        var l = peft.LoraLayers.First();
        double ca = Math.Sqrt(0.5 * l["a"].Scaling), cb = Math.Sqrt(2.0 * l["b"].Scaling);
        var a = l["a"].A.AsSpan().ToArray().Zip(l["b"].A.AsSpan().ToArray(), (x, y) => ca * x + cb * y).ToArray();
        var b = l["a"].B.AsSpan().ToArray().Zip(l["b"].B.AsSpan().ToArray(), (x, y) => ca * x + cb * y).ToArray();
        var want = Reference.BA(a, b, l.Info.OutFeatures, 2, l.Info.InFeatures);
        var got = Delta(l, "lin");
        for (int i = 0; i < got.Length; i++) Assert.Equal(want[i], got[i], 1e-5);
        Assert.Throws<PeftSharpException>(() => TwoAdaptersLinearMismatch());
    }

    private static void TwoAdaptersLinearMismatch()
    {
        var (model, peft) = TwoAdapters(2, 3);
        using var _ = model;
        using var __ = peft;
        peft.AddWeightedAdapter(["a", "b"], [1, 1], "x", "linear");
    }

    [Fact]
    public void Svd_GivesTheBestRankKApproximation()
    {
        var (model, peft) = TwoAdapters(2, 3);
        using var _ = model;
        using var __ = peft;
        peft.AddWeightedAdapter(["a", "b"], [0.7, 1.5], "svd", "svd", svdRank: 2);
        foreach (var l in peft.LoraLayers)
        {
            int n = l.Info.OutFeatures, k = l.Info.InFeatures;
            var da = Delta(l, "a");
            var db = Delta(l, "b");
            // PEFT: Σ (wᵢ·sᵢ)·get_delta_weight(i), get_delta_weight already scaled by sᵢ.
            var m = da.Zip(db, (x, y) => 0.7 * l["a"].Scaling * x + 1.5 * l["b"].Scaling * y).ToArray();
            var best = BestRankK(m, n, k, 2);
            var got = Delta(l, "svd");
            double scale = m.Max(Math.Abs);
            for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - best[i]) <= 1e-4 * scale, $"{l.Info.Name}[{i}]: {got[i]} vs {best[i]}");
        }
    }

    [Fact]
    public void SvdDecomposition_ReconstructsWideAndTallMatrices()
    {
        var rng = new Rng(9);
        foreach (var (rows, cols) in new[] { (5, 3), (3, 5), (4, 4) })
        {
            var m = Enumerable.Range(0, rows * cols).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var (u, s, vt) = Svd.Decompose(m, rows, cols);
            int p = s.Length;
            for (int i = 1; i < p; i++) Assert.True(s[i - 1] >= s[i]);
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                {
                    double acc = 0;
                    for (int q = 0; q < p; q++) acc += u[i * p + q] * s[q] * vt[q * cols + j];
                    Assert.Equal(m[i * cols + j], acc, 1e-10);
                }
        }
    }

    /// <summary>The best rank-k approximation by deflated power iteration on MᵀM (an independent reference).</summary>
    private static double[] BestRankK(double[] m, int n, int k, int rank)
    {
        var res = (double[])m.Clone();
        var approx = new double[m.Length];
        var rng = new Rng(4);
        for (int q = 0; q < rank; q++)
        {
            var v = Enumerable.Range(0, k).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var u = new double[n];
            for (int it = 0; it < 2000; it++)
            {
                for (int i = 0; i < n; i++) { double acc = 0; for (int j = 0; j < k; j++) acc += res[i * k + j] * v[j]; u[i] = acc; }
                for (int j = 0; j < k; j++) { double acc = 0; for (int i = 0; i < n; i++) acc += res[i * k + j] * u[i]; v[j] = acc; }
                double norm = Math.Sqrt(v.Sum(x => x * x));
                for (int j = 0; j < k; j++) v[j] /= norm;
            }
            for (int i = 0; i < n; i++) { double acc = 0; for (int j = 0; j < k; j++) acc += res[i * k + j] * v[j]; u[i] = acc; }
            for (int i = 0; i < n; i++)
                for (int j = 0; j < k; j++) { approx[i * k + j] += u[i] * v[j]; res[i * k + j] -= u[i] * v[j]; }
        }
        return approx;
    }
}
