#!/usr/bin/env python3
"""Same-machine PyTorch reference for the distilgpt2-shaped benchmarks (forward, LoRA training step).

Debian's python3-torch (1.13) here; transformers is not installable, so the model is the plain-PyTorch
GPT-2 of tests/PeftSharp.Tests/Golden/models/make_model_goldens.py (transformers' semantics), with
random weights and LoRA (r 8, alpha 16) on c_attn. Prints one JSON line per case, like bench/.
Run: python3 bench/reference/pytorch_gpt2.py [--threads 2] [--forward-loss | --decode] [--bf16]
"""
import argparse
import importlib.util
import json
import math
import os
import resource
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "goldens", os.path.join(HERE, "..", "..", "tests", "PeftSharp.Tests", "Golden", "models", "make_model_goldens.py"))
goldens = importlib.util.module_from_spec(spec)
spec.loader.exec_module(goldens)

CONFIG = {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 6, "n_head": 12,
          "n_positions": 1024, "n_inner": None, "layer_norm_epsilon": 1e-5}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def lora_forward(params, lora, cfg, ids, mask):
    """GPT-2 forward with y = x·W + b + (alpha/r)·x·Aᵀ·Bᵀ on every c_attn (PEFT's LoRA on Conv1D)."""
    patched = dict(params)
    originals = {}
    for i in range(cfg["n_layer"]):
        name = f"transformer.h.{i}.attn.c_attn.weight"
        a, b = lora[name]
        # Equivalent to adding the LoRA branch to the layer output: W_eff = W + s·(B·A)ᵀ
        originals[name] = params[name]
        patched[name] = params[name] + 2.0 * (b @ a).T
    return goldens.gpt2_forward(patched, cfg, ids, mask)


def gpt2_decode_step(p, cfg, ids, start, cache):
    """GPT-2 forward of new tokens `ids` (1, t) at positions start.., appending to the per-layer (k, v) cache; last logits."""
    b, t = ids.shape
    e, nh = cfg["n_embd"], cfg["n_head"]
    hd = e // nh
    eps = cfg["layer_norm_epsilon"]
    h = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][torch.arange(start, start + t)][None]
    for i in range(cfg["n_layer"]):
        pre = f"transformer.h.{i}."
        a = torch.nn.functional.layer_norm(h, (e,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        qkv = a @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = (x.view(b, t, nh, hd).transpose(1, 2) for x in qkv.split(e, dim=-1))
        if i in cache:
            k = torch.cat([cache[i][0], k], dim=2)
            v = torch.cat([cache[i][1], v], dim=2)
        cache[i] = (k, v)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        if t > 1:
            causal = torch.ones(t, k.shape[2], dtype=torch.bool).tril(k.shape[2] - t)
            scores = scores.masked_fill(~causal, float("-inf"))
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)
        h = h + o @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        m = torch.nn.functional.layer_norm(h, (e,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        m = goldens.gelu_new(m @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"])
        h = h + m @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
    h = torch.nn.functional.layer_norm(h[:, -1:], (e,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
    return (h @ p["transformer.wte.weight"].T)[0, -1]


def greedy_decode(params, prompt, new_tokens):
    """Prefill the prompt, then one token per step from the KV cache; returns (prefill s, decode s)."""
    cache = {}
    t0 = time.perf_counter()
    logits = gpt2_decode_step(params, CONFIG, prompt, 0, cache)
    t1 = time.perf_counter()
    pos = prompt.shape[1]
    for _ in range(new_tokens):
        nxt = logits.argmax().view(1, 1)
        logits = gpt2_decode_step(params, CONFIG, nxt, pos, cache)
        pos += 1
    return t1 - t0, time.perf_counter() - t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--bf16", action="store_true",
                    help="weights in bfloat16 (PyTorch then computes in bf16), for the forward and decode")
    ap.add_argument("--decode", action="store_true",
                    help="greedy decode with a KV cache (32-token prompt, 128 new) instead of the forward and LoRA step")
    ap.add_argument("--forward-loss", action="store_true",
                    help="time forward + loss (evaluation) after the forward, instead of the LoRA step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    if args.bf16:
        # Draw each tensor in f32 and keep it in bf16 at once, so the f32 model never exists whole (peak RSS).
        randn = torch.randn
        torch.randn = lambda *a, **k: randn(*a, **k).to(torch.bfloat16)
        params = goldens.gpt2_params(CONFIG, g)
        torch.randn = randn
    else:
        params = goldens.gpt2_params(CONFIG, g)
    ids = torch.randint(0, CONFIG["vocab_size"], (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    tokens = args.batch * args.seq

    if args.decode:
        prompt = ids[:1, :32]
        with torch.no_grad():
            greedy_decode(params, prompt, 4)
            runs = [greedy_decode(params, prompt, 128) for _ in range(args.steps)]
        prefill, decode = sorted(r[0] for r in runs)[len(runs) // 2], sorted(r[1] for r in runs)[len(runs) // 2]
        print(json.dumps({"bench": "pytorch", "model": "distilgpt2", "mode": "greedy_decode_bf16" if args.bf16 else "greedy_decode", "prompt_tokens": 32, "new_tokens": 128,
                          "threads": args.threads, "prefill_tokens_per_s": round(32 / prefill, 1), "decode_tokens_per_s": round(128 / decode, 1),
                          "peak_rss_mib": round(peak_rss_mb(), 1)}), flush=True)
        return

    with torch.no_grad():
        goldens.gpt2_forward(params, CONFIG, ids, mask)
        t = time.perf_counter()
        for _ in range(args.steps):
            goldens.gpt2_forward(params, CONFIG, ids, mask)
        dt = (time.perf_counter() - t) / args.steps
    print(json.dumps({"bench": "pytorch", "model": "distilgpt2", "mode": "forward_bf16" if args.bf16 else "forward", "batch": args.batch, "seq_len": args.seq,
                      "threads": args.threads, "tokens_per_s": round(tokens / dt, 1), "peak_rss_mib": round(peak_rss_mb(), 1)}), flush=True)

    if args.forward_loss:
        with torch.no_grad():
            goldens.causal_lm_loss(goldens.gpt2_forward(params, CONFIG, ids, mask), ids)
            t = time.perf_counter()
            for _ in range(args.steps):
                goldens.causal_lm_loss(goldens.gpt2_forward(params, CONFIG, ids, mask), ids)
            dt = (time.perf_counter() - t) / args.steps
        print(json.dumps({"bench": "pytorch", "model": "distilgpt2", "mode": "forward_loss", "batch": args.batch, "seq_len": args.seq,
                          "threads": args.threads, "tokens_per_s": round(tokens / dt, 1), "peak_rss_mib": round(peak_rss_mb(), 1)}), flush=True)
        return

    lora = {}
    for i in range(CONFIG["n_layer"]):
        a = torch.empty(8, 768)
        torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        lora[f"transformer.h.{i}.attn.c_attn.weight"] = (a.requires_grad_(), torch.zeros(2304, 8, requires_grad=True))
    opt = torch.optim.AdamW([t for pair in lora.values() for t in pair], lr=1e-4)
    times = []
    for step in range(args.steps + 1):
        t = time.perf_counter()
        loss = goldens.causal_lm_loss(lora_forward(params, lora, CONFIG, ids, mask), ids)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step > 0:
            times.append(time.perf_counter() - t)
    dt = sum(times) / len(times)
    print(json.dumps({"bench": "pytorch", "model": "distilgpt2", "mode": "train_lora_c_attn_r8", "batch": args.batch, "seq_len": args.seq,
                      "threads": args.threads, "tokens_per_s": round(tokens / dt, 1), "step_ms": round(dt * 1000, 1),
                      "peak_rss_mib": round(peak_rss_mb(), 1)}), flush=True)


if __name__ == "__main__":
    main()
