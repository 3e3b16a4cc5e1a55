#!/usr/bin/env python3
"""How good are the judge's pairs? Counts chosen/rejected answers that are on topic (topics.py's ground truth, which the
judge never sees). Usage: python3 examples/rlaif/check_pairs.py [runs/rlaif/pairs.jsonl]"""
import collections
import json
import sys

from topics import on_topic, topic

path = sys.argv[1] if len(sys.argv) > 1 else "runs/rlaif/pairs.jsonl"
pairs = [json.loads(l) for l in open(path)]
counts = collections.Counter((on_topic(p["prompt"], p["chosen"]), on_topic(p["prompt"], p["rejected"])) for p in pairs)
print(json.dumps({"pairs": len(pairs), "no_topic_found": sum(topic(p["prompt"]) is None for p in pairs),
                  "chosen_on_topic_rejected_not": counts[(True, False)], "rejected_on_topic_chosen_not": counts[(False, True)],
                  "both_on_topic": counts[(True, True)], "neither_on_topic": counts[(False, False)]}))
