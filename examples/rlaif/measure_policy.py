#!/usr/bin/env python3
"""The policy's held-out on-topic rate before and after DPO: for each of the 36 held-out prompts (examples/preference/
heldout.jsonl, which neither the judge nor the policy trained on), samples answers through the OpenAI-compatible
completions API of `peftsharp serve` (the same sampling as judge.yaml: temperature 1.0, top_k 10, cut at a new line)
from each model named, plus one greedy answer, and counts those that recommend a title on the prompt's topic
(topics.py), with the binomial standard error sqrt(p (1 - p) / samples). Usage: python3 examples/rlaif/measure_policy.py BASE_URL N MODEL [MODEL ...]"""
import json
import math
import os
import sys
import urllib.request

from topics import on_topic

base, n, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
here = os.path.dirname(os.path.abspath(__file__))
prompts = [json.loads(l)["prompt"] for l in open(os.path.join(here, "..", "preference", "heldout.jsonl"))]


def complete(model, prompt, **sampling):
    body = json.dumps(dict(model=model, prompt=prompt, max_tokens=16, stop=["\n"], **sampling)).encode()
    req = urllib.request.Request(base + "/completions", body, {"Content-Type": "application/json"})
    return [c["text"] for c in json.load(urllib.request.urlopen(req))["choices"]]


for model in models:
    sampled = greedy = 0
    for i, p in enumerate(prompts):
        for k in range(n):
            sampled += on_topic(p, complete(model, p, temperature=1.0, top_k=10, seed=1000 * i + k)[0])
        greedy += on_topic(p, complete(model, p, temperature=0)[0])
    rate = sampled / (n * len(prompts))
    print(json.dumps({"model": model, "prompts": len(prompts), "samples": n * len(prompts), "sampled_on_topic": round(rate, 3),
                      "binomial_se": round(math.sqrt(rate * (1 - rate) / (n * len(prompts))), 3), "greedy_on_topic": f"{greedy}/{len(prompts)}"}))
