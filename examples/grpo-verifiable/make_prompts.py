#!/usr/bin/env python3
"""Makes the GRPO example's prompts from the demo's recommendation data (../youtube-recs/make_data.py): every interest in
the phrasings of the demo's templates, each row with "titles", the interest's three videos (contains:titles checks for
one), and "keywords", the words of those titles that no other interest's titles use and that are not in the interest's
name (contains:keywords: a partial answer, which the small base model hits often enough for GRPO to have a signal), and
"answers", the three answers in the demo's exact format (exact_match:answers, config-sft.yaml). Four phrasings train (160 prompts); two are held out (80 prompts), so the held-out reward
measures whether the policy learned the interest -> title mapping rather than the prompts. Deterministic. Run from the
repository root: python3 examples/grpo-verifiable/make_prompts.py"""
import collections
import importlib.util
import json
import os
import random
import re

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("make_data", os.path.join(here, "..", "youtube-recs", "make_data.py"))
data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(data)

HELD_OUT = {"User is a fan of {x}.", "User searches for {x} videos."}

# Words (4+ letters) that occur in the titles of one interest only and are not in its name: naming one is a partial answer.
WORDS = collections.Counter(w.lower() for titles in data.INTERESTS.values() for w in set(re.findall(r"[A-Za-z]+", " ".join(titles))))
KEYWORDS = {interest: sorted({w.lower() for w in re.findall(r"[A-Za-z]+", " ".join(titles))
                              if len(w) >= 4 and WORDS[w.lower()] == 1 and w.lower() not in interest.split()})
            for interest, titles in data.INTERESTS.items()}


def rows(templates):
    out = [{"prompt": t.format(x=interest) + "\nRecommendation:", "titles": titles, "keywords": KEYWORDS[interest],
            "answers": [f" I recommend '{title}'" for title in titles]}
           for interest, titles in data.INTERESTS.items() for t in templates]
    random.Random(0).shuffle(out)
    return out


def write(name, items):
    with open(os.path.join(here, name), "w") as f:
        for r in items:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


write("train.jsonl", rows([t for t in data.TEMPLATES if t not in HELD_OUT]))
write("heldout.jsonl", rows([t for t in data.TEMPLATES if t in HELD_OUT]))
