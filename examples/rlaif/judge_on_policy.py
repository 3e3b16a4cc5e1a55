#!/usr/bin/env python3
"""How a served pointwise judge grades the policy's own answers (a diagnostic with the ground truth): for the first N pairs
of oracle_pairs.py's output (an on-topic and an off-topic SFT sample of one prompt), asks judge-score.yaml's question about
each answer alone (max_tokens 1, temperature 0) and counts on-topic answers graded "1", off-topic ones graded "0", and pairs
separated the right and the wrong way. Usage: python3 examples/rlaif/judge_on_policy.py BASE_URL MODEL PAIRS.jsonl N"""
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

base, model, pairs, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
TEMPLATE = "Does the answer fit the request?\nRequest: {prompt}\nAnswer:{completion}\nReply with 1 or 0."
rows = [json.loads(l) for l in open(pairs)][:n]


def grade(prompt, answer):
    body = json.dumps(dict(model=model, messages=[{"role": "user", "content": TEMPLATE.format(prompt=prompt, completion=answer)}],
                           max_tokens=1, temperature=0)).encode()
    req = urllib.request.Request(base + "/chat/completions", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["choices"][0]["message"]["content"].strip()


with ThreadPoolExecutor(8) as pool:
    graded = list(pool.map(lambda r: (grade(r["prompt"], r["chosen"]), grade(r["prompt"], r["rejected"])), rows))
print(json.dumps(dict(model=model, pairs=len(rows), on_topic_graded_1=sum(a == "1" for a, _ in graded),
                      off_topic_graded_0=sum(b == "0" for _, b in graded),
                      separated_right=sum(a == "1" and b == "0" for a, b in graded),
                      separated_wrong=sum(a == "0" and b == "1" for a, b in graded))))
