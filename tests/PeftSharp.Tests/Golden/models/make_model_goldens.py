#!/usr/bin/env python3
"""Golden logits, loss and full fine-tuning gradients for tiny GPT-2, Llama and Qwen2 models.

A reference written with PyTorch (Debian's python3-torch 1.13; transformers is not installable
here), following transformers' modeling_gpt2.py / modeling_llama.py / modeling_qwen2.py
semantics: Conv1D weights stored [in, out], gelu_new, pre-LayerNorm; RMSNorm in float32,
rotate-half RoPE with rope_theta and llama3 rope scaling, grouped-query attention, SwiGLU,
Qwen2's q/k/v biases; causal-LM loss with labels shifted inside and ignore index -100.

Writes, per model, into tests/PeftSharp.Tests/Golden/models/<name>/:
  config.json, model.safetensors (Hugging Face names, F32), golden.safetensors (input_ids,
  attention_mask, labels, logits, grad.<param name>) and golden.json (loss).
Run: python3 tests/PeftSharp.Tests/Golden/models/make_model_goldens.py
"""
import json
import math
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def save_safetensors(path, tensors):
    """The safetensors format, by hand: 8-byte header length, JSON header, raw little-endian data."""
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def attention(q, k, v, attention_mask):
    """q (B,H,T,D), k/v (B,Hkv,T,D): causal softmax attention with key padding, kv heads repeated."""
    b, h, t, d = q.shape
    rep = h // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def causal_lm_loss(logits, labels):
    shift_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


def gpt2_forward(p, cfg, ids, mask):
    b, t = ids.shape
    e, nh = cfg["n_embd"], cfg["n_head"]
    hd = e // nh
    eps = cfg["layer_norm_epsilon"]
    h = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][torch.arange(t)][None]
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}."
        a = torch.nn.functional.layer_norm(h, (e,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        qkv = a @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = qkv.split(e, dim=-1)
        q, k, v = (x.view(b, t, nh, hd).transpose(1, 2) for x in (q, k, v))
        o = attention(q, k, v, mask).transpose(1, 2).reshape(b, t, e)
        h = h + o @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        m = torch.nn.functional.layer_norm(h, (e,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        m = gelu_new(m @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"])
        h = h + m @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
    h = torch.nn.functional.layer_norm(h, (e,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
    return h @ p["transformer.wte.weight"].T


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rope_inv_freq(cfg):
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def llama_forward(p, cfg, ids, mask):
    b, t = ids.shape
    hs, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or hs // nh
    eps = cfg["rms_norm_eps"]
    bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    freqs = torch.arange(t).float()[:, None] * rope_inv_freq(cfg)[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    h = p["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        x = rms_norm(h, p[pre + "input_layernorm.weight"], eps)

        def proj(name, heads):
            y = x @ p[pre + f"self_attn.{name}.weight"].T
            if bias:
                y = y + p[pre + f"self_attn.{name}.bias"]
            return y.view(b, t, heads, hd).transpose(1, 2)

        q, k, v = proj("q_proj", nh), proj("k_proj", nkv), proj("v_proj", nkv)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        o = attention(q, k, v, mask).transpose(1, 2).reshape(b, t, nh * hd)
        h = h + o @ p[pre + "self_attn.o_proj.weight"].T
        x = rms_norm(h, p[pre + "post_attention_layernorm.weight"], eps)
        gate = x @ p[pre + "mlp.gate_proj.weight"].T
        up = x @ p[pre + "mlp.up_proj.weight"].T
        h = h + (torch.nn.functional.silu(gate) * up) @ p[pre + "mlp.down_proj.weight"].T
    h = rms_norm(h, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return h @ head.T


def gpt2_params(cfg, g):
    e, v, inner = cfg["n_embd"], cfg["vocab_size"], cfg["n_inner"] or 4 * cfg["n_embd"]
    p = {"transformer.wte.weight": torch.randn(v, e, generator=g) * 0.3,
         "transformer.wpe.weight": torch.randn(cfg["n_positions"], e, generator=g) * 0.1,
         "transformer.ln_f.weight": 1 + 0.1 * torch.randn(e, generator=g),
         "transformer.ln_f.bias": 0.1 * torch.randn(e, generator=g)}
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            p[pre + ln + ".weight"] = 1 + 0.1 * torch.randn(e, generator=g)
            p[pre + ln + ".bias"] = 0.1 * torch.randn(e, generator=g)
        for name, (fin, fout) in {"attn.c_attn": (e, 3 * e), "attn.c_proj": (e, e),
                                  "mlp.c_fc": (e, inner), "mlp.c_proj": (inner, e)}.items():
            p[pre + name + ".weight"] = torch.randn(fin, fout, generator=g) / math.sqrt(fin)
            p[pre + name + ".bias"] = 0.1 * torch.randn(fout, generator=g)
    return p


def llama_params(cfg, g):
    hs, v, inter = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or hs // nh
    bias = cfg["model_type"] == "qwen2" or cfg.get("attention_bias", False)
    p = {"model.embed_tokens.weight": torch.randn(v, hs, generator=g) * 0.3,
         "model.norm.weight": 1 + 0.1 * torch.randn(hs, generator=g)}
    if not cfg["tie_word_embeddings"]:
        p["lm_head.weight"] = torch.randn(v, hs, generator=g) / math.sqrt(hs)
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        p[pre + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(hs, generator=g)
        p[pre + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(hs, generator=g)
        shapes = {"self_attn.q_proj": (nh * hd, hs), "self_attn.k_proj": (nkv * hd, hs),
                  "self_attn.v_proj": (nkv * hd, hs), "self_attn.o_proj": (hs, nh * hd),
                  "mlp.gate_proj": (inter, hs), "mlp.up_proj": (inter, hs), "mlp.down_proj": (hs, inter)}
        for name, (fout, fin) in shapes.items():
            p[pre + name + ".weight"] = torch.randn(fout, fin, generator=g) / math.sqrt(fin)
            if bias and name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                p[pre + name + ".bias"] = 0.1 * torch.randn(fout, generator=g)
    return p


CONFIGS = {
    "tiny-gpt2": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 96, "n_embd": 32,
                  "n_layer": 2, "n_head": 4, "n_positions": 64, "n_ctx": 64, "n_inner": None,
                  "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05, "tie_word_embeddings": True,
                  "bos_token_id": 0, "eos_token_id": 0},
    "tiny-llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 96, "hidden_size": 32,
                   "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
                   "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                   "max_position_embeddings": 64, "tie_word_embeddings": False, "attention_bias": False,
                   "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2},
    "tiny-qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 96, "hidden_size": 32,
                   "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 1, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
                   "max_position_embeddings": 64, "tie_word_embeddings": True, "hidden_act": "silu",
                   "sliding_window": None, "use_sliding_window": False, "bos_token_id": 94, "eos_token_id": 95},
}


def main():
    torch.set_default_dtype(torch.float32)
    for index, (name, cfg) in enumerate(CONFIGS.items()):
        g = torch.Generator().manual_seed(1234 + index)
        params = gpt2_params(cfg, g) if cfg["model_type"] == "gpt2" else llama_params(cfg, g)
        ids = torch.randint(0, cfg["vocab_size"], (2, 7), generator=g)
        mask = torch.ones(2, 7, dtype=torch.int64)
        mask[1, 5:] = 0
        labels = ids.clone()
        labels[mask == 0] = -100
        for t in params.values():
            t.requires_grad_(True)
        forward = gpt2_forward if cfg["model_type"] == "gpt2" else llama_forward
        logits = forward(params, cfg, ids, mask)
        loss = causal_lm_loss(logits, labels)
        loss.backward()

        out = os.path.join(HERE, name)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        save_safetensors(os.path.join(out, "model.safetensors"), {k: v.detach() for k, v in params.items()})
        golden = {"input_ids": ids, "attention_mask": mask, "labels": labels, "logits": logits.detach()}
        golden.update({"grad." + k: v.grad for k, v in params.items()})
        save_safetensors(os.path.join(out, "golden.safetensors"), golden)
        with open(os.path.join(out, "golden.json"), "w") as f:
            json.dump({"loss": loss.item(), "torch_version": torch.__version__}, f, indent=2, sort_keys=True)
        print(name, "loss", loss.item(), "params", sum(t.numel() for t in params.values()))


if __name__ == "__main__":
    main()
