"""Generate a whole synthetic VQA world on disk, reuse it if it is already there, and read it back.

Invariant: the files under ``out_dir`` are a pure function of the :class:`WorldConfig` (no
timestamps, no machine-dependent ordering), and ``world.json`` is written *last*, atomically, with
the config fingerprint: a directory holding a ``world.json`` whose fingerprint matches holds a
complete world and is reused as is; anything else is (re)generated.

Layout (``out_dir`` is also the image folder every ``image`` path is relative to)::

    world.json                        manifest: config, fingerprint, files, counts, answer prior
    images/{train,val,test}/000123.png
    train.json, val.json              LLaVA / ShareGPT4V conversations (training, validation loss);
                                      with train_captions, train.json also holds one caption per image
    val_questions.jsonl, test_questions.jsonl      {"question_id","image","text","category","kind"}
    val_annotations.jsonl, test_annotations.jsonl  {"question_id","answer"}
    {split}_scenes.jsonl              scene records + question provenance (template, params)

    info = generate_world(WorldConfig(seed=0), "runs/world")
    info["test"]["questions"], info["counts"]["test"]["questions"]
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from grace.data.synthetic.config import (
    CAPTION_PROMPT,
    CATEGORIES,
    SPLITS,
    WORLD_VERSION,
    WorldConfig,
    WorldConfigError,
)
from grace.data.synthetic.questions import NEGATIVE_TYPES, Question, ask, caption
from grace.data.synthetic.scene import Scene, render, sample_split
from grace.errors import GraceError

FORMAT_NAME = "grace-synthvqa"
MANIFEST = "world.json"
# Splits sampled in this order: the evaluation splits first, so they depend only on the seed and
# their own sizes; train then avoids every scene they hold.
_SAMPLING_ORDER = ("test", "val", "train")
_EVAL_SPLITS = ("val", "test")
_CONV_SPLITS = ("train", "val")


def _split_files(split: str) -> dict[str, str]:
    files = {"images": f"images/{split}", "scenes": f"{split}_scenes.jsonl"}
    if split in _CONV_SPLITS:
        files["conversations"] = f"{split}.json"
    if split in _EVAL_SPLITS:
        files["questions"] = f"{split}_questions.jsonl"
        files["annotations"] = f"{split}_annotations.jsonl"
    return files


def image_path(split: str, index: int) -> str:
    return f"images/{split}/{index:06d}.png"


def plan_questions(scenes: list[Scene], cfg: WorldConfig, split: str) -> list[list[Question]]:
    """The questions of every image of a split, balanced by construction.

    Categories rotate across the split's question slots (equal shares); multiple choice is
    spread evenly at ``mc_fraction`` per category; existence answers alternate yes/no (balanced
    to within one) and the "no" questions cycle through random / popular / adversarial negatives.
    """
    rng = random.Random(f"grace-synthvqa:{cfg.seed}:{split}:questions")
    cats, q = cfg.categories, cfg.questions_per_image
    mc_seen: Counter = Counter()
    n_exist = n_no = 0
    out = []
    for i, scene in enumerate(scenes):
        qs: list[Question] = []
        for k in range(q):
            cat = cats[(i * q + k) % len(cats)]
            j = mc_seen[cat]
            # Evenly spaced multiple choice: question j is mc when floor((j+1)f) steps up.
            mc = cat != "existence" and int((j + 1) * cfg.mc_fraction) > int(j * cfg.mc_fraction)
            for _ in range(8):  # avoid asking the same sentence twice about one image
                question = ask(scene, cat, cfg, rng, mc=mc, want_yes=n_exist % 2 == 0,
                               negative=NEGATIVE_TYPES[n_no % len(NEGATIVE_TYPES)])
                if all(question.question != p.question for p in qs):
                    break
            mc_seen[cat] += 1
            if cat == "existence":
                n_exist += 1
                n_no += question.answer == "no"
            qs.append(question)
        out.append(qs)
    return out


def _caption_conversation(split: str, index: int, scene: Scene, grid: int) -> dict:
    return {"id": f"{split}_{index:06d}_caption", "image": image_path(split, index),
            "conversations": [{"from": "human", "value": "<image>\n" + CAPTION_PROMPT},
                              {"from": "gpt", "value": caption(scene, grid)}]}


def _conversations(split: str, index: int, qs: list[Question], multi_turn: bool) -> list[dict]:
    img = image_path(split, index)
    if multi_turn:
        turns = []
        for k, q in enumerate(qs):
            # LLaVA puts <image> once, in the first human turn.
            turns.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q.text})
            turns.append({"from": "gpt", "value": q.label})
        return [{"id": f"{split}_{index:06d}", "image": img, "conversations": turns}]
    return [{"id": f"{split}_{index:06d}_{k}", "image": img,
             "conversations": [{"from": "human", "value": "<image>\n" + q.text},
                               {"from": "gpt", "value": q.label}]} for k, q in enumerate(qs)]


def answer_prior(records: Iterable[Mapping], fit: Iterable[Mapping] | None = None) -> dict[str, float]:
    """Accuracy of always giving the most frequent answer of each (category, kind), per category.

    ``records`` (and ``fit``) are dicts with ``category``, ``kind`` and ``answer`` (the label: word,
    yes/no or letter). The majority answers are counted on ``fit`` (default: ``records`` themselves,
    an optimistic blind baseline). ``"overall"`` pools all records.

        answer_prior([{"category": "count", "kind": "short", "answer": "2"}, ...])   # {"count": 0.31, ...}
    """
    records = list(records)
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in (records if fit is None else fit):
        counts[(r["category"], r["kind"])][r["answer"]] += 1
    # Ties break on the answer text so the prior is deterministic.
    majority = {key: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for key, c in counts.items()}
    hits: Counter = Counter()
    totals: Counter = Counter()
    for r in records:
        hit = majority.get((r["category"], r["kind"])) == r["answer"]
        for key in (r["category"], "overall"):
            hits[key] += hit
            totals[key] += 1
    order = [c for c in CATEGORIES if c in totals] + sorted(set(totals) - set(CATEGORIES) - {"overall"})
    return {key: hits[key] / totals[key] for key in [*order, "overall"] if totals[key]}


def _question_records(split: str, plans: list[list[Question]]) -> list[dict]:
    recs, qid = [], 0
    for qs in plans:
        for q in qs:
            recs.append({"question_id": qid, "category": q.category, "kind": q.kind, "answer": q.label})
            qid += 1
    return recs


def _dump_json_list(path: Path, rows: list[dict]) -> None:
    # One record per line: valid JSON, readable, and diff-friendly.
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_text("[\n" + body + "\n]\n" if rows else "[]\n", encoding="utf-8")


def _dump_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _result(root: Path, manifest: dict, reused: bool) -> dict:
    out = {"root": str(root), "manifest": str(root / MANIFEST), "image_folder": str(root), "reused": reused,
           "counts": manifest["counts"], "answer_prior": manifest["answer_prior"]}
    for split, files in manifest["files"].items():
        out[split] = {k: str(root / v) for k, v in files.items()}
    return out


def load_world(out_dir: str | os.PathLike) -> dict:
    """Read and check a world's manifest; returns it (config as a :class:`WorldConfig` under ``cfg``).

        world = load_world("runs/world"); world["cfg"].image_size
    """
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraceError(f"{path}: no synthetic world here (run generate_world first)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise GraceError(f"{path}: unreadable world manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise GraceError(f"{path}: field 'format' is not {FORMAT_NAME!r}")
    if manifest.get("version", 0) > WORLD_VERSION:
        raise GraceError(f"{path}: field 'version' {manifest.get('version')} is newer than this grace")
    try:
        cfg = WorldConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, WorldConfigError) as e:
        raise GraceError(f"{path}: field 'config' is invalid ({e})") from None
    for key in ("fingerprint", "files", "counts", "answer_prior"):
        if key not in manifest:
            raise GraceError(f"{path}: missing field {key!r}")
    manifest["cfg"] = cfg
    return manifest


def _is_complete(root: Path, manifest: dict) -> bool:
    for split, files in manifest["files"].items():
        for kind, rel in files.items():
            p = root / rel
            if kind == "images":
                if not p.is_dir() or sum(1 for _ in p.glob("*.png")) != manifest["counts"][split]["images"]:
                    return False
            elif not p.is_file():
                return False
    return True


def _clear_images(root: Path) -> None:
    """Remove images a previous world left behind (only our own ``NNNNNN.png`` names)."""
    for split in SPLITS:
        d = root / "images" / split
        if d.is_dir():
            for p in d.iterdir():
                if re.fullmatch(r"\d{6}\.png", p.name):
                    p.unlink()


def generate_world(cfg: WorldConfig, out_dir: str | os.PathLike, *, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Write the world for ``cfg`` under ``out_dir`` (or reuse it); returns paths, counts and prior.

        info = generate_world(WorldConfig(n_train_images=500), "runs/world")
        info["train"]["conversations"], info["test"]["questions"], info["reused"]

    A directory that already holds a *different* complete world is an error unless
    ``overwrite=True``, so a changed config never silently mixes with old files.
    """
    if not isinstance(cfg, WorldConfig):
        raise GraceError(f"generate_world: cfg must be a WorldConfig, got {type(cfg).__name__}")
    root = Path(out_dir)
    if (root / MANIFEST).exists():
        old = load_world(root)
        if old["fingerprint"] == cfg.fingerprint() and _is_complete(root, old):
            return _result(root, old, reused=True)
        if old["fingerprint"] != cfg.fingerprint() and not overwrite:
            raise GraceError(f"{root / MANIFEST}: holds a world with a different config; pass overwrite=True "
                             f"or choose another directory")
        (root / MANIFEST).unlink()  # from here on the directory is "incomplete" until we finish
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GraceError(f"{root}: cannot create the world directory ({e.strerror or e})") from None
    _clear_images(root)

    taken: set = set()
    scenes = {split: sample_split(cfg, split, taken) for split in _SAMPLING_ORDER}
    plans = {split: plan_questions(scenes[split], cfg, split) for split in SPLITS}

    total = sum(len(v) for v in scenes.values())
    bar = tqdm(total=total, desc="synthvqa images", unit="img", disable=not progress, leave=False)
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        for i, scene in enumerate(scenes[split]):
            render(scene, cfg.image_size, cfg.noise).save(root / image_path(split, i), format="PNG")
            bar.update(1)
    bar.close()

    manifest: dict = {"format": FORMAT_NAME, "version": WORLD_VERSION, "fingerprint": cfg.fingerprint(),
                      "config": cfg.to_dict(), "image_folder": ".", "files": {}, "counts": {},
                      "answer_prior": {},
                      "vocabulary": {"colors": list(cfg.colors), "shapes": list(cfg.shapes),
                                     "positions": list(cfg.positions), "counts": list(cfg.count_answers)}}
    for split in SPLITS:
        files = _split_files(split)
        manifest["files"][split] = files
        recs = _question_records(split, plans[split])
        scene_rows, conv_rows, q_rows, a_rows = [], [], [], []
        qid = 0
        for i, (scene, qs) in enumerate(zip(scenes[split], plans[split], strict=True)):
            img = image_path(split, i)
            prov = []
            for q in qs:
                prov.append({"question_id": qid, "category": q.category, "kind": q.kind,
                             "template": q.template, "params": q.params, "question": q.question,
                             "answer": q.answer, "label": q.label, "options": list(q.options),
                             "negative": q.negative})
                q_rows.append({"question_id": qid, "image": img, "text": q.text, "category": q.category,
                               "kind": q.kind})
                a_rows.append({"question_id": qid, "answer": q.label})
                qid += 1
            scene_rows.append({"image": img, "index": i, **scene.to_dict(cfg.grid), "questions": prov})
            conv_rows.extend(_conversations(split, i, qs, cfg.train_multi_turn))
            if split == "train" and cfg.train_captions:
                conv_rows.append(_caption_conversation(split, i, scene, cfg.grid))
        _dump_jsonl(root / files["scenes"], scene_rows)
        if "conversations" in files:
            _dump_json_list(root / files["conversations"], conv_rows)
        if "questions" in files:
            _dump_jsonl(root / files["questions"], q_rows)
            _dump_jsonl(root / files["annotations"], a_rows)
            manifest["answer_prior"][split] = answer_prior(recs)
        yn = Counter(r["answer"] for r in recs if r["kind"] == "yesno")
        manifest["counts"][split] = {
            "images": len(scenes[split]), "questions": len(recs),
            "conversations": len(conv_rows) if "conversations" in files else 0,
            "by_category": dict(Counter(r["category"] for r in recs)),
            "by_kind": dict(Counter(r["kind"] for r in recs)),
            "yes": yn["yes"], "no": yn["no"],
        }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)  # atomic: the manifest appears only once everything is written
    return _result(root, manifest, reused=False)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Parse a jsonl file; a bad line raises a GraceError naming the file and line number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise GraceError(f"{path}:{n}: invalid JSON ({e.msg})") from None
    return rows


def world_answer_prior(out_dir: str | os.PathLike, split: str = "test",
                       fit_split: str | None = None) -> dict[str, float]:
    """Answer prior of a written world's split, read from its scene records.

        world_answer_prior("runs/world")                     # majority fitted on test itself
        world_answer_prior("runs/world", fit_split="train")  # majority learnt from train answers
    """
    manifest = load_world(out_dir)

    def recs(s: str) -> list[dict]:
        if s not in manifest["files"]:
            raise GraceError(f"{Path(out_dir) / MANIFEST}: no split {s!r}")
        rows = read_jsonl(Path(out_dir) / manifest["files"][s]["scenes"])
        return [{"category": q["category"], "kind": q["kind"], "answer": q["label"]}
                for r in rows for q in r["questions"]]

    return answer_prior(recs(split), None if fit_split is None else recs(fit_split))


def contact_sheet(out_dir: str | os.PathLike, split: str = "test", n: int = 48, cols: int = 8,
                  scale: int = 4, path: str | os.PathLike | None = None) -> Path:
    """Tile the first ``n`` images of a split (nearest-upscaled) into one PNG to eyeball the world.

        contact_sheet("runs/world")        # -> runs/world/contact_sheet_test.png
    """
    manifest = load_world(out_dir)
    size = manifest["cfg"].image_size * scale
    n = min(n, manifest["counts"][split]["images"])
    rows = max(1, -(-n // cols))
    gap, label_h = 2, 12
    sheet = Image.new("RGB", (cols * (size + gap) + gap, rows * (size + label_h + gap) + gap), (90, 90, 90))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        img = Image.open(Path(out_dir) / image_path(split, i)).convert("RGB")
        x = gap + (i % cols) * (size + gap)
        y = gap + (i // cols) * (size + label_h + gap)
        sheet.paste(img.resize((size, size), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 2, y + size), f"{i}", fill=(255, 255, 255))
    out = Path(path) if path is not None else Path(out_dir) / f"contact_sheet_{split}.png"
    sheet.save(out)
    return out
