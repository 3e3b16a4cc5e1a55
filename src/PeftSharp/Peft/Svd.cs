namespace PeftSharp.Peft;

/// <summary>
/// A small dense SVD in double by one-sided Jacobi rotations (Hestenes): M (rows × cols) = U·diag(S)·Vᵀ
/// with the singular values descending. Meant for adapter-sized matrices (add_weighted_adapter "svd").
/// </summary>
public static class Svd
{
    /// <summary>Returns U (rows × p), S (p) and Vt (p × cols), p = min(rows, cols), all row-major.</summary>
    public static (double[] U, double[] S, double[] Vt) Decompose(double[] m, int rows, int cols)
    {
        if (rows < cols)
        {
            var t = new double[m.Length];
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) t[j * rows + i] = m[i * cols + j];
            var (u2, s2, vt2) = Decompose(t, cols, rows);   // Mᵀ = U2·S·Vt2 ⇒ M = Vt2ᵀ·S·U2ᵀ
            int p = rows;
            var u = new double[rows * p];
            var vt = new double[p * cols];
            for (int i = 0; i < rows; i++)
                for (int q = 0; q < p; q++) u[i * p + q] = vt2[q * rows + i];
            for (int q = 0; q < p; q++)
                for (int j = 0; j < cols; j++) vt[q * cols + j] = u2[j * p + q];
            return (u, s2, vt);
        }
        int n = cols;
        var a = (double[])m.Clone();                         // (rows, n), columns orthogonalized in place
        var v = new double[n * n];
        for (int i = 0; i < n; i++) v[i * n + i] = 1;
        for (int sweep = 0; sweep < 60; sweep++)
        {
            double off = 0;
            for (int p = 0; p < n - 1; p++)
                for (int q = p + 1; q < n; q++)
                {
                    double alpha = 0, beta = 0, gamma = 0;
                    for (int i = 0; i < rows; i++)
                    {
                        double x = a[i * n + p], y = a[i * n + q];
                        alpha += x * x; beta += y * y; gamma += x * y;
                    }
                    if (gamma == 0 || Math.Abs(gamma) <= 1e-15 * Math.Sqrt(alpha * beta)) continue;
                    off = Math.Max(off, Math.Abs(gamma) / Math.Sqrt(alpha * beta));
                    double zeta = (beta - alpha) / (2 * gamma);
                    double tan = Math.Sign(zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    if (zeta == 0) tan = 1;
                    double c = 1 / Math.Sqrt(1 + tan * tan), s = c * tan;
                    for (int i = 0; i < rows; i++)
                    {
                        double x = a[i * n + p], y = a[i * n + q];
                        a[i * n + p] = c * x - s * y;
                        a[i * n + q] = s * x + c * y;
                    }
                    for (int i = 0; i < n; i++)
                    {
                        double x = v[i * n + p], y = v[i * n + q];
                        v[i * n + p] = c * x - s * y;
                        v[i * n + q] = s * x + c * y;
                    }
                }
            if (off < 1e-14) break;
        }
        var sv = new double[n];
        for (int q = 0; q < n; q++)
        {
            double norm = 0;
            for (int i = 0; i < rows; i++) norm += a[i * n + q] * a[i * n + q];
            sv[q] = Math.Sqrt(norm);
        }
        var order = Enumerable.Range(0, n).OrderByDescending(q => sv[q]).ToArray();
        var uo = new double[rows * n];
        var so = new double[n];
        var vto = new double[n * n];
        for (int k = 0; k < n; k++)
        {
            int q = order[k];
            so[k] = sv[q];
            for (int i = 0; i < rows; i++) uo[i * n + k] = sv[q] > 0 ? a[i * n + q] / sv[q] : 0;
            for (int j = 0; j < n; j++) vto[k * n + j] = v[j * n + q];
        }
        return (uo, so, vto);
    }
}
