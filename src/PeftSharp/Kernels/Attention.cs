namespace PeftSharp.Kernels;

/// <summary>
/// Causal multi-head attention with grouped-query heads, fused per head (flash-attention style).
/// Layout: Q and O are (B, T, H, D); K and V are (B, T, Hkv, D), with H a multiple of Hkv and
/// query head h reading kv head h / (H/Hkv). Scale 1/sqrt(D). Query t sees key s when s ≤ t, the
/// key is not padding (attentionMask[b, s] ≠ 0, if given) and both tokens share a segment id
/// (segmentIds[b, s] == segmentIds[b, t], if given — packed sequences). Forward keeps one
/// logsumexp per (b, h, t); no T×T matrix is ever stored, and backward recomputes the
/// probabilities from Q, K and the logsumexp. A row with no visible key outputs 0.
/// </summary>
public static unsafe class Attention
{
    private const int KeyBlock = 64;

    public static void Forward(
        float* q,             // (B, T, H, D)
        float* k,             // (B, T, Hkv, D)
        float* v,             // (B, T, Hkv, D)
        int* attentionMask,   // (B, T) or null
        int* segmentIds,      // (B, T) or null
        float* output,        // (B, T, H, D) out
        float* lse,           // (B, H, T) out, saved
        int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        CheckHeads(heads, kvHeads);
        if (Simd.Use512) AttentionBlocked.Forward(q, k, v, attentionMask, segmentIds, output, lse, batch, tokens, heads, kvHeads, headDim);
        else ForwardPerKey(q, k, v, attentionMask, segmentIds, output, lse, batch, tokens, heads, kvHeads, headDim);
    }

    /// <summary>The Vector256/scalar path: one key at a time with an online softmax over blocks of 64 keys.</summary>
    private static void ForwardPerKey(
        float* q,             // (B, T, H, D)
        float* k,             // (B, T, Hkv, D)
        float* v,             // (B, T, Hkv, D)
        int* attentionMask,   // (B, T) or null
        int* segmentIds,      // (B, T) or null
        float* output,        // (B, T, H, D) out
        float* lse,           // (B, H, T) out, saved
        int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        int group = heads / kvHeads, T = tokens, D = headDim;
        float scale = 1f / MathF.Sqrt(D);
        Parallel.For(0, batch * heads, task =>
        {
            int b = task / heads, h = task % heads, kvh = h / group;
            float* scores = stackalloc float[KeyBlock];
            for (int t = 0; t < T; t++)
            {
                float* qt = q + (((long)b * T + t) * heads + h) * D;
                float* acc = output + (((long)b * T + t) * heads + h) * D;
                new Span<float>(acc, D).Clear();
                float max = float.NegativeInfinity, sum = 0f;
                for (int s0 = 0; s0 <= t; s0 += KeyBlock)
                {
                    int s1 = Math.Min(t + 1, s0 + KeyBlock);
                    float blockMax = float.NegativeInfinity;
                    for (int s = s0; s < s1; s++)
                    {
                        if (!Visible(attentionMask, segmentIds, b, T, t, s)) { scores[s - s0] = float.NegativeInfinity; continue; }
                        float* ks = k + (((long)b * T + s) * kvHeads + kvh) * D;
                        float score = Elementwise.Dot(D, qt, ks) * scale;
                        scores[s - s0] = score;
                        blockMax = MathF.Max(blockMax, score);
                    }
                    if (blockMax == float.NegativeInfinity) continue;
                    if (blockMax > max)
                    {
                        if (sum > 0f)
                        {
                            float correction = MathF.Exp(max - blockMax);
                            sum *= correction;
                            Elementwise.Scale(D, correction, acc, acc);
                        }
                        max = blockMax;
                    }
                    for (int s = s0; s < s1; s++)
                    {
                        if (scores[s - s0] == float.NegativeInfinity) continue;
                        float p = MathF.Exp(scores[s - s0] - max);
                        sum += p;
                        Elementwise.Axpy(D, p, v + (((long)b * T + s) * kvHeads + kvh) * D, acc);
                    }
                }
                float* l = lse + ((long)b * heads + h) * T + t;
                if (sum == 0f) { *l = float.NegativeInfinity; continue; }
                Elementwise.Scale(D, 1f / sum, acc, acc);
                *l = max + MathF.Log(sum);
            }
        });
    }

    /// <summary>
    /// Flash-attention backward (Vector512: blocked, <see cref="AttentionBlocked"/>): with P recomputed as exp(q·k·scale - lse) and Δt = dOt·Ot,
    /// dV += Pᵀ·dO, dS = P∘(dO·Vᵀ - Δ), dQ += dS·K·scale, dK += dSᵀ·Q·scale. Parallel over
    /// (batch, kv head) so each task owns its dK/dV rows and its group's dQ rows.
    /// </summary>
    public static void Backward(
        float* q, float* k, float* v,   // as in Forward
        int* attentionMask, int* segmentIds,
        float* output,                  // (B, T, H, D) saved forward output
        float* lse,                     // (B, H, T) saved
        float* dOutput,                 // (B, T, H, D)
        float* dq,                      // (B, T, H, D) += or null
        float* dk,                      // (B, T, Hkv, D) += or null
        float* dv,                      // (B, T, Hkv, D) += or null
        int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        CheckHeads(heads, kvHeads);
        if (Simd.Use512) AttentionBlocked.Backward(q, k, v, attentionMask, segmentIds, output, lse, dOutput, dq, dk, dv, batch, tokens, heads, kvHeads, headDim);
        else BackwardPerKey(q, k, v, attentionMask, segmentIds, output, lse, dOutput, dq, dk, dv, batch, tokens, heads, kvHeads, headDim);
    }

    private static void BackwardPerKey(
        float* q, float* k, float* v,
        int* attentionMask, int* segmentIds,
        float* output,                  // (B, T, H, D) saved forward output
        float* lse,                     // (B, H, T) saved
        float* dOutput,                 // (B, T, H, D)
        float* dq,                      // (B, T, H, D) += or null
        float* dk,                      // (B, T, Hkv, D) += or null
        float* dv,                      // (B, T, Hkv, D) += or null
        int batch, int tokens, int heads, int kvHeads, int headDim)
    {
        int group = heads / kvHeads, T = tokens, D = headDim;
        float scale = 1f / MathF.Sqrt(D);
        Parallel.For(0, batch * kvHeads, task =>
        {
            int b = task / kvHeads, kvh = task % kvHeads;
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
            for (int t = 0; t < T; t++)
            {
                float rowLse = lse[((long)b * heads + h) * T + t];
                if (rowLse == float.NegativeInfinity) continue;
                long qo = (((long)b * T + t) * heads + h) * D;
                float* qt = q + qo, dot = dOutput + qo;
                float delta = Elementwise.Dot(D, dot, output + qo);
                for (int s = 0; s <= t; s++)
                {
                    if (!Visible(attentionMask, segmentIds, b, T, t, s)) continue;
                    long ko = (((long)b * T + s) * kvHeads + kvh) * D;
                    float p = MathF.Exp(Elementwise.Dot(D, qt, k + ko) * scale - rowLse);
                    if (dv != null) Elementwise.Axpy(D, p, dot, dv + ko);
                    float ds = p * (Elementwise.Dot(D, dot, v + ko) - delta) * scale;
                    if (dq != null) Elementwise.Axpy(D, ds, k + ko, dq + qo);
                    if (dk != null) Elementwise.Axpy(D, ds, qt, dk + ko);
                }
            }
        });
    }

    internal static bool Visible(int* attentionMask, int* segmentIds, int b, int T, int t, int s)
    {
        long bs = (long)b * T;
        if (attentionMask != null && attentionMask[bs + s] == 0) return false;
        return segmentIds == null || segmentIds[bs + s] == segmentIds[bs + t];
    }

    private static void CheckHeads(int heads, int kvHeads)
    {
        if (kvHeads <= 0 || heads % kvHeads != 0)
            throw new ArgumentException($"The number of query heads ({heads}) must be a positive multiple of the number of key/value heads ({kvHeads}).");
    }
}
