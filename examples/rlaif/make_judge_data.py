#!/usr/bin/env python3
"""Makes SFT data that teaches a small model to be a pairwise judge for the demo's recommendation task: every preference
pair of examples/preference (pairs.jsonl: 324 train, heldout.jsonl: 36) becomes two chat examples, the pair shown in
both orders, whose user message is judge.yaml's pairwise prompt filled in and whose assistant answer is the identifier of
the chosen completion ("0" or "1", TRL's convention). A sampling policy's mistakes are mostly near misses (a title with
a word from another title: 'Capsule Warmorile Wardrobe'), which the preference pairs lack, so each training pair also
gives three near-miss pairs: the chosen answer with one of the slips the policy's samples show (a word of the title replaced,
cut or run into a piece of another word, the title spliced with another's end, text after the title, a second title, a
garbled first word; both orders again). Deterministic; run from the repo root:
python3 examples/rlaif/make_judge_data.py (judge-train.jsonl: 2592, judge-heldout.jsonl: 72)"""
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


titles = sorted({r["chosen"].split("'")[1] for r in train})
NEAR_MISSES = 3  # per training pair


def fragment(word):
    """A piece of a word, as a sampling policy's sub-word slips leave (`'Tfual'`, `'Openingective'`)."""
    i = rng.randrange(1, max(2, len(word)))
    return word[:i] if rng.random() < 0.5 else word[i:]


def near_miss(chosen):
    """The chosen answer with one of the slips a small sampling policy makes: a word of its title replaced by another title's
    word, cut short or run into a piece of another word, the title spliced with another title's end, text after the closing
    quote, a second title, or a garbled first word."""
    title = chosen.split("'")[1].split()
    other = rng.choice(titles).split()
    i = rng.randrange(len(title))
    kind = rng.randrange(7)
    if kind == 0:
        title[i] = rng.choice([w for w in words if w != title[i]])
    elif kind == 1:
        title[i] = fragment(title[i]) if len(title[i]) > 1 else title[i] + fragment(rng.choice(words))
    elif kind == 2:
        title[i] = title[i] + fragment(rng.choice(words)).lower()
    elif kind == 3:
        title = title[:i] + other[rng.randrange(len(other)):]
    if kind == 4:
        return " I recommend '" + " ".join(title) + "'" + fragment(rng.choice(words)) + " " + rng.choice(words) + "'"
    if kind == 5:
        return " I recommend '" + " ".join(title) + "', '" + " ".join(other) + "'"
    if kind == 6:
        return fragment(rng.choice(words)).lower() + " recommend '" + " ".join(title) + "'"
    missed = " I recommend '" + " ".join(title) + "'"
    return missed if missed != chosen else near_miss(chosen)


for source, target in (("pairs.jsonl", "judge-train.jsonl"), ("heldout.jsonl", "judge-heldout.jsonl")):
    rows = [json.loads(l) for l in open(os.path.join(here, "..", "preference", source))]
    if source == "pairs.jsonl":
        rows = rows + [dict(r, rejected=near_miss(r["chosen"])) for _ in range(NEAR_MISSES) for r in rows]
    with open(os.path.join(here, target), "w") as f:
        for r in rows:
            for first, second, answer in ((r["chosen"], r["rejected"], "0"), (r["rejected"], r["chosen"], "1")):
                user = TEMPLATE.format(prompt=r["prompt"], response0=first, response1=second)
                f.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]},
                                   ensure_ascii=False) + "\n")

# The pointwise judge (judge-score.yaml's judge.ranking: score): one answer at a time, "1" when it fits the request, "0" when it
# does not; the same pairs and near misses, each answer on its own (the chosen ones twice, so "1" is not outweighed 1 : 2).
SCORE_TEMPLATE = "Does the answer fit the request?\nRequest: {prompt}\nAnswer:{completion}\nReply with 1 or 0."
for source, target in (("pairs.jsonl", "judge-score-train.jsonl"), ("heldout.jsonl", "judge-score-heldout.jsonl")):
    rows = [json.loads(l) for l in open(os.path.join(here, "..", "preference", source))]
    items = [(r["prompt"], r["chosen"], "1") for r in rows] + [(r["prompt"], r["rejected"], "0") for r in rows]
    if source == "pairs.jsonl":
        items += [(r["prompt"], r["chosen"], "1") for r in rows]
        items += [(r["prompt"], near_miss(r["chosen"]), "0") for _ in range(NEAR_MISSES) for r in rows]
        rng.shuffle(items)
    with open(os.path.join(here, target), "w") as f:
        for prompt, completion, answer in items:
            user = SCORE_TEMPLATE.format(prompt=prompt, completion=completion)
            f.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]},
                               ensure_ascii=False) + "\n")

