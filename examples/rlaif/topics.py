"""The demo task's ground truth, shared by the measuring scripts: each interest's three titles (from
examples/youtube-recs/make_data.py, read without running it) and whether an answer recommends one on the prompt's topic."""
import ast
import os
import re

_here = os.path.dirname(os.path.abspath(__file__))
_source = open(os.path.join(_here, "..", "youtube-recs", "make_data.py")).read()
INTERESTS = next(ast.literal_eval(n.value) for n in ast.parse(_source).body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "INTERESTS")


def topic(prompt):
    """The interest a prompt names (outside the quoted title of a watched video), the longest that matches."""
    text = re.sub(r"'[^']*'", "", prompt.split("\n")[0]).lower()
    found = [k for k in INTERESTS if re.search(r"\b" + re.escape(k) + r"\b", text)]
    return max(found, key=len) if found else None


def on_topic(prompt, answer):
    """The answer is exactly " I recommend 'TITLE'" with TITLE one of the prompt's interest's titles."""
    m = re.fullmatch(r" ?I recommend '([^']*)'\s*", answer)
    return bool(m) and topic(prompt) is not None and m.group(1) in INTERESTS[topic(prompt)]
