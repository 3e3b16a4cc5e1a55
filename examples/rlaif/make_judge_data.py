#!/usr/bin/env python3
"""Makes SFT data that teaches a small model to be a pairwise judge for the demo's recommendation task: every preference
pair of examples/preference (pairs.jsonl: 324 train, heldout.jsonl: 36) becomes two chat examples, the pair shown in
both orders, whose user message is judge.yaml's pairwise prompt filled in and whose assistant answer is the identifier of
the chosen completion ("0" or "1", TRL's convention). Deterministic; run from the repo root:
python3 examples/rlaif/make_judge_data.py (judge-train.jsonl: 648, judge-heldout.jsonl: 72)"""
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
# The same template as judge.yaml's judge.system_prompt (TRL's default is longer than the demo model's 512 positions).
TEMPLATE = ("Which answer fits the request better?\nRequest: {prompt}\nAnswer 0:{response0}\nAnswer 1:{response1}\n"
            "Reply with 0 or 1.")

for source, target in (("pairs.jsonl", "judge-train.jsonl"), ("heldout.jsonl", "judge-heldout.jsonl")):
    rows = [json.loads(l) for l in open(os.path.join(here, "..", "preference", source))]
    with open(os.path.join(here, target), "w") as f:
        for r in rows:
            for first, second, answer in ((r["chosen"], r["rejected"], "0"), (r["rejected"], r["chosen"], "1")):
                user = TEMPLATE.format(prompt=r["prompt"], response0=first, response1=second)
                f.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]},
                                   ensure_ascii=False) + "\n")
