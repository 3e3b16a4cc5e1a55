#!/usr/bin/env python3
"""Makes SFT data that teaches a small model to be a pairwise judge for the demo's recommendation task: every preference
pair of examples/preference (pairs.jsonl: 324 train, heldout.jsonl: 36) becomes two chat examples, the pair shown in
both orders, whose user message is judge.yaml's pairwise prompt filled in and whose assistant answer is the identifier of
the chosen completion ("0" or "1", TRL's convention). A sampling policy's mistakes are mostly near misses (a title with
a word from another title: 'Capsule Warmorile Wardrobe'), which the preference pairs lack, so each training pair also
gives a near-miss pair: the chosen title with one word replaced by a word of another title (both orders again).
Deterministic; run from the repo root:
python3 examples/rlaif/make_judge_data.py (judge-train.jsonl: 1296, judge-heldout.jsonl: 72)"""
import json
import os
import random

here = os.path.dirname(os.path.abspath(__file__))
# The same template as judge.yaml's judge.system_prompt (TRL's default is longer than the demo model's 512 positions).
TEMPLATE = ("Which answer fits the request better?\nRequest: {prompt}\nAnswer 0:{response0}\nAnswer 1:{response1}\n"
            "Reply with 0 or 1.")

rng = random.Random(0)
train = [json.loads(l) for l in open(os.path.join(here, "..", "preference", "pairs.jsonl"))]
words = sorted({w for r in train for w in r["chosen"].split("'")[1].split()})


def near_miss(chosen):
    """The chosen title with one of its words replaced by another title's word."""
    title = chosen.split("'")[1].split()
    i = rng.randrange(len(title))
    title[i] = rng.choice([w for w in words if w != title[i]])
    return " I recommend '" + " ".join(title) + "'"


for source, target in (("pairs.jsonl", "judge-train.jsonl"), ("heldout.jsonl", "judge-heldout.jsonl")):
    rows = [json.loads(l) for l in open(os.path.join(here, "..", "preference", source))]
    if source == "pairs.jsonl":
        rows = rows + [dict(r, rejected=near_miss(r["chosen"])) for r in rows]
    with open(os.path.join(here, target), "w") as f:
        for r in rows:
            for first, second, answer in ((r["chosen"], r["rejected"], "0"), (r["rejected"], r["chosen"], "1")):
                user = TEMPLATE.format(prompt=r["prompt"], response0=first, response1=second)
                f.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]},
                                   ensure_ascii=False) + "\n")
