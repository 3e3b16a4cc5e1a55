#!/usr/bin/env python3
"""Makes preference pairs for the demo's recommendation task from examples/youtube-recs/train.jsonl: for each prompt
the chosen completion is the recommendation on the user's topic; the rejected one is, alternately, a recommendation
from another topic or a badly formatted answer. Deterministic; run from the repo root:
python3 examples/preference/make_pairs.py (pairs.jsonl: 324 for training, heldout.jsonl: 36)"""
import json
import os
import random

here = os.path.dirname(os.path.abspath(__file__))
rows = [json.loads(l) for l in open(os.path.join(here, "..", "youtube-recs", "train.jsonl"))]
titles = sorted({r["completion"] for r in rows})
rng = random.Random(0)
pairs = []
for i, r in enumerate(rows):
    if i % 2 == 0:
        rejected = rng.choice([t for t in titles if t != r["completion"]])  # off topic
    else:
        rejected = " " + r["completion"].split("'")[1].lower() + " maybe??"  # badly formatted
    pairs.append({"prompt": r["prompt"], "chosen": r["completion"], "rejected": rejected})
# The last 36 pairs are held out (eval_file).
for name, part in (("pairs.jsonl", pairs[:-36]), ("heldout.jsonl", pairs[-36:])):
    with open(os.path.join(here, name), "w") as f:
        for p in part:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
