#!/usr/bin/env python3
"""The served judge's accuracy on held-out pairs: asks every example of judge-heldout.jsonl (36 pairs, both orders) through
the OpenAI-compatible chat API, as `peftsharp judge` does (max_tokens 1, temperature 0), and compares the answer with the
chosen completion's identifier. With a third argument, judge-score-heldout.jsonl, it measures the pointwise judge instead
(each held-out answer alone, "1" fits / "0" does not). Usage: python3 examples/rlaif/measure_judge.py [BASE_URL] [MODEL] [FILE]"""
import json
import os
import sys
import urllib.request

base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8765/v1"
model = sys.argv[2] if len(sys.argv) > 2 else "judge"
here = os.path.dirname(os.path.abspath(__file__))
heldout = sys.argv[3] if len(sys.argv) > 3 else "judge-heldout.jsonl"
pointwise = "score" in heldout
rows = [json.loads(l) for l in open(os.path.join(here, heldout))]
right = unparseable = 0
pairs_right = 0
answers = []
for r in rows:
    body = json.dumps({"model": model, "messages": r["messages"][:1], "max_tokens": 1, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/chat/completions", body, {"Content-Type": "application/json"})
    text = json.load(urllib.request.urlopen(req))["choices"][0]["message"]["content"].strip()
    answers.append(text)
    if text not in ("0", "1"):
        unparseable += 1
    elif text == r["messages"][1]["content"]:
        right += 1
if pointwise:
    print(json.dumps({"model": model, "answers": len(rows), "right": right, "unparseable": unparseable,
                      "accuracy": round(right / len(rows), 3),
                      "fitting_graded_1": sum(a == "1" for a, r in zip(answers, rows) if r["messages"][1]["content"] == "1"),
                      "fitting": sum(r["messages"][1]["content"] == "1" for r in rows),
                      "unfitting_graded_0": sum(a == "0" for a, r in zip(answers, rows) if r["messages"][1]["content"] == "0"),
                      "unfitting": sum(r["messages"][1]["content"] == "0" for r in rows)}))
    sys.exit(0)
# A pair is judged right when both orders are (what judge.yaml's both_orders asks).
for i in range(0, len(rows), 2):
    if answers[i] == rows[i]["messages"][1]["content"] and answers[i + 1] == rows[i + 1]["messages"][1]["content"]:
        pairs_right += 1
print(json.dumps({"model": model, "questions": len(rows), "right": right, "unparseable": unparseable,
                  "accuracy": round(right / len(rows), 3), "pairs_right_both_orders": pairs_right, "pairs": len(rows) // 2,
                  "answered_0": answers.count("0"), "answered_1": answers.count("1")}))
