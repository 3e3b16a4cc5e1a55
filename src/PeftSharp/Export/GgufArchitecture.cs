using System.Text.RegularExpressions;
using PeftSharp.Formats.Gguf;
using PeftSharp.Formats.HfConfig;

namespace PeftSharp.Export;

/// <summary>
/// How one model family is laid out in llama.cpp's GGUF: the architecture name, the hyperparameter keys, and the
/// tensor names (llama.cpp's gguf-py TensorNameMap), with the Llama q/k rows permuted from Hugging Face's rotary
/// layout back to llama.cpp's interleaved one as convert_hf_to_gguf.py's LlamaModel does. Mistral is written as
/// "llama" (llama.cpp runs it as one); Qwen2 keeps Hugging Face's rotary layout (llama.cpp ropes it NeoX-style).
/// </summary>
public sealed partial class GgufArchitecture
{
    private GgufArchitecture(string name, ModelConfig config)
    {
        Name = name;
        Config = config;
    }

    /// <summary>llama.cpp's architecture name: llama, qwen2 or gpt2.</summary>
    public string Name { get; }
    public ModelConfig Config { get; }

    public static GgufArchitecture For(ModelConfig config) => config.ModelType switch
    {
        "llama" or "mistral" => new GgufArchitecture("llama", config),
        "qwen2" => new GgufArchitecture("qwen2", config),
        "gpt2" => new GgufArchitecture("gpt2", config),
        var t => throw new PeftSharpException($"GGUF export: model type '{t}' is not supported (expected llama, mistral, qwen2 or gpt2)."),
    };

    /// <summary>The hyperparameters under "{arch}." (context_length, embedding_length, block_count, ...).</summary>
    public void AddHyperparameters(GgufWriter writer)
    {
        string a = Name;
        writer.Add($"{a}.context_length", (uint)Config.MaxPositionEmbeddings);
        writer.Add($"{a}.embedding_length", (uint)Config.HiddenSize);
        writer.Add($"{a}.block_count", (uint)Config.LayerCount);
        writer.Add($"{a}.attention.head_count", (uint)Config.HeadCount);
        switch (Config)
        {
            case Gpt2Config g:
                writer.Add($"{a}.feed_forward_length", (uint)g.IntermediateSize);
                writer.Add($"{a}.attention.layer_norm_epsilon", (float)g.LayerNormEpsilon);
                if (g.ActivationFunction is not ("gelu_new" or "gelu_pytorch_tanh" or "gelu"))
                    throw new PeftSharpException($"GGUF export: GPT-2 activation '{g.ActivationFunction}' is not what llama.cpp computes (tanh GELU).");
                break;
            case LlamaConfig l:
                if (l.HiddenAct != "silu") throw new PeftSharpException($"GGUF export: hidden_act '{l.HiddenAct}' is not supported by llama.cpp's {a} (expected silu).");
                if (l.MlpBias || l.OutputBias || (l.AttentionBias && l.ModelType != "qwen2"))
                    throw new PeftSharpException("GGUF export: attention_bias/mlp_bias Llama models are not supported by llama.cpp's llama architecture.");
                writer.Add($"{a}.feed_forward_length", (uint)l.IntermediateSize);
                writer.Add($"{a}.attention.head_count_kv", (uint)l.KeyValueHeadCount);
                writer.Add($"{a}.rope.freq_base", (float)l.RopeTheta);
                writer.Add($"{a}.attention.layer_norm_rms_epsilon", (float)l.RmsNormEps);
                writer.Add($"{a}.rope.dimension_count", (uint)l.HeadDim);
                if (l.HeadDim * l.HeadCount != l.HiddenSize)
                {
                    writer.Add($"{a}.attention.key_length", (uint)l.HeadDim);
                    writer.Add($"{a}.attention.value_length", (uint)l.HeadDim);
                }
                switch (l.RopeScaling?.RopeType)
                {
                    case null or "default": break;
                    case "linear":
                        writer.Add($"{a}.rope.scaling.type", "linear");
                        writer.Add($"{a}.rope.scaling.factor", (float)l.RopeScaling.Factor);
                        break;
                    case "llama3" when Name == "llama": break; // rope_freqs.weight carries it
                    default:
                        throw new PeftSharpException($"GGUF export: rope_scaling '{l.RopeScaling.RopeType}' is not supported (llama3 and linear are).");
                }
                break;
        }
        writer.Add($"{a}.vocab_size", (uint)Config.VocabSize);
    }

    /// <summary>Extra tensors llama.cpp needs that Hugging Face computes: rope_freqs.weight for llama3 rope scaling (the divisor of each frequency).</summary>
    public IEnumerable<(string Name, float[] Values)> ExtraTensors()
    {
        if (Config is not LlamaConfig { RopeScaling.RopeType: "llama3" } l || Name != "llama") yield break;
        var scaled = l.ComputeInverseFrequencies();
        var factors = new float[scaled.Length];
        for (int i = 0; i < factors.Length; i++)
            factors[i] = 1f / MathF.Pow((float)l.RopeTheta, (float)(2 * i) / l.HeadDim) / scaled[i];
        yield return ("rope_freqs.weight", factors);
    }

    /// <summary>llama.cpp's name of a transformers tensor (null: a tensor llama.cpp does not read).</summary>
    public string? TensorName(string hfName)
    {
        if (Name == "gpt2")
        {
            string n = hfName.StartsWith("transformer.", StringComparison.Ordinal) ? hfName["transformer.".Length..] : hfName;
            switch (n)
            {
                case "wte.weight": return "token_embd.weight";
                case "wpe.weight": return "position_embd.weight";
                case "ln_f.weight": return "output_norm.weight";
                case "ln_f.bias": return "output_norm.bias";
                case "lm_head.weight": return "output.weight";
            }
            var m = Gpt2Block().Match(n);
            if (!m.Success) return null;
            string part = m.Groups[2].Value switch
            {
                "ln_1" => "attn_norm",
                "attn.c_attn" => "attn_qkv",
                "attn.c_proj" => "attn_output",
                "ln_2" => "ffn_norm",
                "mlp.c_fc" => "ffn_up",
                "mlp.c_proj" => "ffn_down",
                _ => "",
            };
            return part == "" ? null : $"blk.{m.Groups[1].Value}.{part}.{m.Groups[3].Value}";
        }
        switch (hfName)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        var b = LlamaBlock().Match(hfName);
        if (!b.Success) return null;
        string p = b.Groups[2].Value switch
        {
            "input_layernorm" => "attn_norm",
            "post_attention_layernorm" => "ffn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => "",
        };
        return p == "" ? null : $"blk.{b.Groups[1].Value}.{p}.{b.Groups[3].Value}";
    }

    /// <summary>
    /// The heads whose rows of <paramref name="hfName"/> are permuted from Hugging Face's rotary layout (each head's
    /// first half of rows, then second half) to llama.cpp's interleaved pairs: q_proj by attention heads, k_proj by
    /// key-value heads; 0 for any other tensor or architecture.
    /// </summary>
    public int PermuteHeads(string hfName)
    {
        if (Name != "llama" || Config is not LlamaConfig l) return 0;
        if (hfName.EndsWith("self_attn.q_proj.weight", StringComparison.Ordinal) || hfName.EndsWith("self_attn.q_proj", StringComparison.Ordinal)) return l.HeadCount;
        if (hfName.EndsWith("self_attn.k_proj.weight", StringComparison.Ordinal) || hfName.EndsWith("self_attn.k_proj", StringComparison.Ordinal)) return l.KeyValueHeadCount;
        return 0;
    }

    /// <summary>
    /// Reorders the rows of a [rows, columns] matrix within each of <paramref name="heads"/> heads: row 2i of a head takes
    /// row i and row 2i+1 takes row i + d/2 (convert_hf_to_gguf.py's <c>permute</c>: reshape (heads, 2, d/2, ...), swap axes 1 and 2).
    /// </summary>
    public static void PermuteRows(Span<float> values, int rows, int columns, int heads)
    {
        if (heads <= 0 || rows % (2 * heads) != 0) throw new PeftSharpException($"GGUF export: cannot permute {rows} rows into {heads} rotary heads.");
        int d = rows / heads, half = d / 2;
        var copy = values.ToArray();
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
            {
                copy.AsSpan((h * d + i) * columns, columns).CopyTo(values.Slice((h * d + 2 * i) * columns, columns));
                copy.AsSpan((h * d + half + i) * columns, columns).CopyTo(values.Slice((h * d + 2 * i + 1) * columns, columns));
            }
    }

    [GeneratedRegex(@"^h\.(\d+)\.(ln_1|attn\.c_attn|attn\.c_proj|ln_2|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$")]
    private static partial Regex Gpt2Block();

    [GeneratedRegex(@"^model\.layers\.(\d+)\.([a-z_]+\.?[a-z_]*)\.(weight|bias)$")]
    private static partial Regex LlamaBlock();
}
