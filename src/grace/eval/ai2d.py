"""AI2D (test): lmms-eval's letter rule as the headline, VLMEvalKit exact matching alongside.

Invariant: neither toolkit is "official" for generative VLMs; LLaVA-family numbers (LLaVA-NeXT,
lmms-eval) use this rule: if the output starts with optional whitespace, one capital letter and
".", keep that letter, otherwise keep the whole output; then it must equal the target letter after
lower-casing and deleting all ASCII punctuation. Plain accuracy, no circular or grouped scoring.
Which AI2D variant was scored (masked lmms-lab/ai2d or the no-mask one) depends on the files given.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from grace.errors import GraceError
from grace.eval.base import MC_SUFFIX, Benchmark, Item, as_key, hf_image, pct, result
from grace.eval.mcq import can_infer
from grace.eval.readers import DataFiles, image_from_base64, is_missing, read_rows, require, where

_LEADING_LETTER = re.compile(r"^\s*([A-Z])\.")
_PUNCT = str.maketrans("", "", string.punctuation)


def ai2d_extract(output: str) -> str:
    """lmms-eval's filter: the leading 'X.' letter if present, else the whole output."""
    m = _LEADING_LETTER.match(output)
    return m.group(1) if m else output


def ai2d_correct(output: str, target: str) -> bool:
    """Exact match ignoring case and punctuation. ``ai2d_correct("(B)", "B") is True``"""
    return ai2d_extract(output).lower().translate(_PUNCT) == target.lower().translate(_PUNCT)


def ai2d_prompt(question: str, options: Sequence[str]) -> str:
    """lmms-eval's default: question, newline-joined 'A. option' lines, the MC suffix."""
    opts = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))
    return f"{question}\n{opts}{MC_SUFFIX}"


class AI2D(Benchmark):
    name = "ai2d"
    title = "AI2D (test)"
    max_new_tokens = 16  # lmms-eval's ai2d generation_kwargs

    def load(self, data: DataFiles) -> list[Item]:
        files = data.match("*.parquet") or data.match("*.tsv")
        if not files:
            raise GraceError("ai2d: --data needs lmms-lab/ai2d parquet files or VLMEvalKit's AI2D_TEST.tsv")
        items = []
        n = 0
        for f in files:
            for r in read_rows(f):
                require(r, ("question", "answer"), where(f, r))
                if "options" in r:  # lmms-eval layout: list of options, answer = index as a string
                    opts = [str(o) for o in r["options"]]
                    target = chr(65 + int(r["answer"]))
                    img = hf_image(r.get("image"))
                    k = str(n)
                else:  # VLMEvalKit TSV: A-D columns, letter answer, base64 image
                    opts = [str(r[L]) for L in "ABCD" if L in r and not is_missing(r.get(L))]
                    target = str(r["answer"]).strip()
                    img = image_from_base64(r.get("image"), where(f, r))
                    k = as_key(r.get("index", n))
                n += 1
                choices = {chr(65 + i): o for i, o in enumerate(opts)}
                items.append(Item(k, k, ai2d_prompt(str(r["question"]), opts), img,
                                  {"answer": target, "choices": choices}))
        return items

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        lmms = []
        vlmeval = []
        for it in items:
            t = it.target
            if t is None:
                continue
            rec = answers.get(it.key)
            lmms.append(bool(rec) and ai2d_correct(rec["text"], t["answer"]))
            vlmeval.append(bool(rec) and can_infer(rec["text"], t["choices"]) == t["answer"])
        acc = pct(sum(lmms), len(lmms))
        metrics = {"accuracy": acc, "accuracy_vlmevalkit_exact": pct(sum(vlmeval), len(vlmeval))}
        return result(self.name, "accuracy (lmms-eval rule)", acc, metrics,
                      counts={"correct": sum(lmms), "scored": len(lmms)})
