"""HallusionBench, rule-based (VLMEvalKit exact matching) on the image questions only.

Invariant: this is NOT the official protocol. The official scorer asks GPT-4 to judge each answer
against ``gt_answer_details``; offline we read Yes/No with :func:`grace.eval.yesno.yes_no` and
compare with the Yes/No label, as VLMEvalKit does without a judge, over the questions that show an
image (``visual_input`` != "0"; 951 of 1,129). aAcc = share of right answers; fAcc = share of
(l2 category, set, figure) groups all right; qAcc = share of (l2 category, set, question) groups
all right. The headline is the mean of the three (how leaderboards usually quote it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from grace.errors import GraceError
from grace.eval.base import Benchmark, Item, as_key, hf_image, pct, result
from grace.eval.readers import DataFiles, ImageRef, image_from_base64, read_json, read_rows, require, where
from grace.eval.yesno import yes_no


def group_accuracy(groups: dict[tuple, list[bool]]) -> float:
    """Percent of groups whose every answer is right."""
    return pct(sum(1 for v in groups.values() if v and all(v)), len(groups))


def hallusion_metrics(rows: Sequence[tuple[bool, str, str, str, str]]) -> dict:
    """aAcc, fAcc, qAcc from (correct, l2 category, set id, figure id, question id)."""
    figs: dict[tuple, list[bool]] = defaultdict(list)
    qs: dict[tuple, list[bool]] = defaultdict(list)
    for ok, l2, s, f, q in rows:
        figs[(l2, s, f)].append(ok)
        qs[(l2, s, q)].append(ok)
    return {
        "aAcc": pct(sum(r[0] for r in rows), len(rows)),
        "fAcc": group_accuracy(figs),
        "qAcc": group_accuracy(qs),
    }


def _label(v) -> str:
    s = str(v).strip().lower()
    if s in ("1", "yes"):
        return "Yes"
    if s in ("0", "no"):
        return "No"
    raise ValueError(f"label {v!r} is not Yes/No or 1/0")


class HallusionBench(Benchmark):
    name = "hallusionbench"
    title = "HallusionBench (rule-based, image questions)"
    max_new_tokens = 128  # lmms-eval's hallusion_bench_image generation_kwargs

    def load(self, data: DataFiles) -> list[Item]:
        parquet = data.match("*.parquet")
        tsv = data.match("*.tsv")
        official = data.match("hallusionbench*.json")
        if not (parquet or tsv or official):
            raise GraceError(
                "hallusionbench: --data needs HallusionBench.json (+ its images), lmms-lab/HallusionBench "
                "parquet files, or VLMEvalKit's HallusionBench.tsv"
            )
        rows: list[tuple[dict, str, object]] = []
        if parquet:
            for f in parquet:
                rows += [(r, where(f, r), hf_image(r.get("image"))) for r in read_rows(f)]
        elif official:
            doc = read_json(official[0])
            if not isinstance(doc, list):
                raise GraceError(f"{official[0]}: expected a JSON list of questions")
            for i, r in enumerate(doc):
                fn = r.get("filename")
                img = ImageRef(name=fn[2:] if isinstance(fn, str) and fn.startswith("./") else fn) if fn else None
                rows.append((r, f"{official[0]}: element {i}", img))
        if rows:
            return self._items_from_official(rows)
        items = []
        for f in tsv:
            for r in read_rows(f):
                require(r, ("index", "question", "answer"), where(f, r))
                parts = str(r["index"]).split("_")
                l2 = r.get("l2-category") or r.get("l2_category") or r.get("category", "")
                try:
                    target = {
                        "answer": _label(r["answer"]), "l2": str(l2),
                        "category": str(r.get("category", "")).split("_")[0],
                        "set": str(r.get("set_id", parts[3] if len(parts) > 5 else "")),
                        "figure": str(r.get("figure_id", parts[4] if len(parts) > 5 else "")),
                        "question": str(r.get("question_id", parts[5] if len(parts) > 5 else "")),
                    }
                except ValueError as e:
                    raise GraceError(f"{where(f, r)}: {e}") from e
                img = image_from_base64(r.get("image"), where(f, r))
                k = as_key(r["index"])
                items.append(Item(k, r["index"], str(r["question"]), img, target))
        return items

    @staticmethod
    def _items_from_official(rows) -> list[Item]:
        items = []
        for r, w, img in rows:
            require(r, ("category", "subcategory", "set_id", "figure_id", "question_id", "question", "gt_answer"), w)
            if str(r.get("visual_input", "1")) == "0":
                continue  # the text-only questions are outside the rule-based protocol
            try:
                ans = _label(r["gt_answer"])
            except ValueError as e:
                raise GraceError(f"{w}: {e}") from e
            cat, sub = str(r["category"]), str(r["subcategory"])
            k = f"{cat}_{sub}_{r['set_id']}_{r['figure_id']}_{r['question_id']}"
            target = {"answer": ans, "l2": f"{cat}_{sub}", "category": cat, "set": str(r["set_id"]),
                      "figure": str(r["figure_id"]), "question": str(r["question_id"])}
            items.append(Item(k, k, str(r["question"]), img, target))
        return items

    def score(self, items: Sequence[Item], answers: dict[str, dict]) -> dict:
        rows = []
        unknown = 0
        for it in items:
            t = it.target
            if t is None:
                continue
            rec = answers.get(it.key)
            pred = yes_no(rec["text"]) if rec else "Unknown"
            unknown += pred == "Unknown"
            rows.append((pred == t["answer"], t["l2"], t["set"], t["figure"], t["question"], t["category"]))
        overall = hallusion_metrics([r[:5] for r in rows])
        headline = (overall["aAcc"] + overall["fAcc"] + overall["qAcc"]) / 3
        metrics = {"mean_a_f_q": headline, **overall}
        for field_idx, label in ((5, "category"), (1, "l2_category")):
            for val in sorted({r[field_idx] for r in rows}):
                sub = hallusion_metrics([r[:5] for r in rows if r[field_idx] == val])
                for k, v in sub.items():
                    metrics[f"{label}/{val}/{k}"] = v
        return result(self.name, "mean of aAcc, fAcc, qAcc (rule-based)", headline, metrics,
                      counts={"unknown_yes_no": unknown, "scored": len(rows)},
                      protocol="rule-based Yes/No extraction (VLMEvalKit exact matching), not the official GPT-4 judge")
