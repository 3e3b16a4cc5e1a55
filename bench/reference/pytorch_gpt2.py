#!/usr/bin/env python3
"""Same-machine PyTorch reference for the distilgpt2-shaped benchmarks (forward, LoRA training step).

Debian's python3-torch (1.13) here; transformers is not installable, so the model is the plain-PyTorch
GPT-2 of tests/PeftSharp.Tests/Golden/models/make_model_goldens.py (transformers' semantics), with
random weights and LoRA (r 8, alpha 16) on c_attn. Prints one JSON line per case, like bench/.
Run: python3 bench/reference/pytorch_gpt2.py [--threads 2] [--forward-loss]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--forward-loss", action="store_true",
                    help="time forward + loss (evaluation) after the forward, instead of the LoRA step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    params = goldens.gpt2_params(CONFIG, g)
    ids = torch.randint(0, CONFIG["vocab_size"], (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    tokens = args.batch * args.seq

    with torch.no_grad():
        goldens.gpt2_forward(params, CONFIG, ids, mask)
        t = time.perf_counter()
        for _ in range(args.steps):
            goldens.gpt2_forward(params, CONFIG, ids, mask)
        dt = (time.perf_counter() - t) / args.steps
    print(json.dumps({"bench": "pytorch", "model": "distilgpt2", "mode": "forward", "batch": args.batch, "seq_len": args.seq,
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
