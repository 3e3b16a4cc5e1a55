using System.Globalization;
using System.Net;
using System.Text;

namespace PeftSharp.Reporting;

/// <summary>A named series of (x, y) points for a line chart.</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<(double X, double Y)> Points, string Color);

/// <summary>Draws small line charts as inline SVG: no script, no network, readable in any browser.</summary>
public static class SvgChart
{
    private const int Width = 560, Height = 260, Left = 64, Right = 16, Top = 28, Bottom = 40;

    public static string Line(string title, string xLabel, IReadOnlyList<ChartSeries> series, bool logY = false)
    {
        var all = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!logY || p.Y > 0)).ToList();
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {Width} {Height}\" width=\"{Width}\" height=\"{Height}\" role=\"img\" aria-label=\"{Esc(title)}\">");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left}\" y=\"18\" class=\"title\">{Esc(title)}</text>");
        if (all.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"{Height / 2}\" text-anchor=\"middle\" class=\"empty\">no data</text></svg>");
            return sb.ToString();
        }
        double x0 = all.Min(p => p.X), x1 = all.Max(p => p.X);
        double Ty(double y) => logY ? Math.Log10(y) : y;
        double y0 = all.Min(p => Ty(p.Y)), y1 = all.Max(p => Ty(p.Y));
        if (x1 == x0) { x0 -= 0.5; x1 += 0.5; }
        if (y1 == y0) { y0 -= 0.5; y1 += 0.5; }
        double pad = (y1 - y0) * 0.05;
        bool nonNegative = y0 >= 0;
        y0 -= pad; y1 += pad;
        if (nonNegative && !logY && y0 < 0) y0 = 0;
        double Px(double x) => Left + (x - x0) / (x1 - x0) * (Width - Left - Right);
        double Py(double y) => Height - Bottom - (Ty(y) - y0) / (y1 - y0) * (Height - Top - Bottom);

        sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{Left}\" y=\"{Top}\" width=\"{Width - Left - Right}\" height=\"{Height - Top - Bottom}\" class=\"frame\"/>");
        for (int i = 0; i <= 4; i++)
        {
            double ty = y0 + (y1 - y0) * i / 4;
            double py = Height - Bottom - (ty - y0) / (y1 - y0) * (Height - Top - Bottom);
            double shown = logY ? Math.Pow(10, ty) : ty;
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" x2=\"{Width - Right}\" y1=\"{F(py)}\" y2=\"{F(py)}\" class=\"grid\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 6}\" y=\"{F(py + 4)}\" text-anchor=\"end\" class=\"tick\">{Esc(Tick(shown))}</text>");
            double tx = x0 + (x1 - x0) * i / 4;
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(Px(tx))}\" y=\"{Height - Bottom + 16}\" text-anchor=\"middle\" class=\"tick\">{Esc(Tick(tx))}</text>");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(Left + Width - Right) / 2}\" y=\"{Height - 6}\" text-anchor=\"middle\" class=\"axis\">{Esc(xLabel)}</text>");

        int legendX = Width - Right - 8;
        for (int s = 0; s < series.Count; s++)
        {
            var pts = series[s].Points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!logY || p.Y > 0)).ToList();
            if (pts.Count == 0) continue;
            var path = string.Join(" ", pts.Select((p, i) => (i == 0 ? "M" : "L") + F(Px(p.X)) + "," + F(Py(p.Y))));
            sb.Append(CultureInfo.InvariantCulture, $"<path class=\"series\" data-series=\"{Esc(series[s].Name)}\" d=\"{path}\" stroke=\"{series[s].Color}\" fill=\"none\" stroke-width=\"2\"/>");
            if (pts.Count == 1)
                sb.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{F(Px(pts[0].X))}\" cy=\"{F(Py(pts[0].Y))}\" r=\"3\" fill=\"{series[s].Color}\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{legendX}\" y=\"{Top + 14 + 14 * s}\" text-anchor=\"end\" fill=\"{series[s].Color}\" class=\"legend\">{Esc(series[s].Name)}</text>");
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    private static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    private static string Tick(double v)
    {
        double a = Math.Abs(v);
        return a == 0 ? "0" : a >= 1e4 || a < 1e-3 ? v.ToString("0.##e0", CultureInfo.InvariantCulture) : v.ToString(a >= 100 ? "0" : a >= 1 ? "0.##" : "0.####", CultureInfo.InvariantCulture);
    }

    private static string Esc(string s) => WebUtility.HtmlEncode(s);
}
