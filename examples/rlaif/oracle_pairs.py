#!/usr/bin/env python3
"""Diagnostic, not RLAIF: DPO pairs labelled by the ground truth (topics.py). For each of the preference example's 324
training prompts and each sampling seed, asks the SFT model served at BASE_URL for 8 answers (temperature 1, top_k 10, cut
at a new line) and, when some are on topic and some not, writes one random on-topic answer as chosen and one random other as
rejected. Usage: python3 examples/rlaif/oracle_pairs.py BASE_URL MODEL OUT.jsonl SEEDS
(README.md: http://127.0.0.1:8765/v1 runs/demo/sft-merged runs/rlaif/oracle-pairs.jsonl 3 gave 825 pairs)."""
import json
import os
import random
import sys
import urllib.request

from topics import on_topic

base, model, out_path, seeds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
here = os.path.dirname(os.path.abspath(__file__))
prompts = [json.loads(l)["prompt"] for l in open(os.path.join(here, "..", "preference", "pairs.jsonl"))]
rng = random.Random(0)
written = 0
with open(out_path, "w") as out:
    for s in range(seeds):
        for i, p in enumerate(prompts):
            body = json.dumps(dict(model=model, prompt=p, max_tokens=16, stop=["\n"], n=8, temperature=1.0, top_k=10,
                                   seed=100000 * s + i)).encode()
            req = urllib.request.Request(base + "/completions", body, {"Content-Type": "application/json"})
            texts = [c["text"] for c in json.load(urllib.request.urlopen(req))["choices"]]
            good = [t for t in texts if on_topic(p, t)]
            bad = [t for t in texts if not on_topic(p, t)]
            if good and bad:
                out.write(json.dumps(dict(prompt=p, chosen=rng.choice(good), rejected=rng.choice(bad))) + "\n")
                written += 1
print(written)
