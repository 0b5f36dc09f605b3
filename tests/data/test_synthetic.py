"""Tests for the synthetic VQA world: determinism, disjoint splits, exact answers, formats, corpus.

The answer checks do not call the generator's own resolver: they parse the English question back
with regexes and resolve it against the scene record (whose positions are re-derived from pixel
coordinates), so a template, its parameters, its sentence and its answer must all agree.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from grace.data.synthetic import (
    MC_SUFFIX,
    PALETTE,
    SHORT_SUFFIX,
    Scene,
    SceneObject,
    WorldConfig,
    WorldConfigError,
    answer_prior,
    contact_sheet,
    corpus,
    generate_world,
    load_world,
    read_jsonl,
    render,
    sample_scene,
    world_answer_prior,
)
from grace.data.synthetic.config import POSITION_NAMES, SHAPE_PLURALS
from grace.errors import GraceError

SMALL = WorldConfig(seed=3, n_train_images=40, n_val_images=15, n_test_images=30, questions_per_image=5)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    info = generate_world(SMALL, root, progress=False)
    return root, info


def _scenes(root: Path, split: str) -> list[dict]:
    return read_jsonl(root / f"{split}_scenes.jsonl")


# ---- determinism, idempotency -------------------------------------------------------------------
def test_same_seed_gives_identical_files(world, tmp_path):
    root, _ = world
    generate_world(SMALL, tmp_path / "again", progress=False)
    assert _hashes(root) == _hashes(tmp_path / "again")


def test_other_seed_differs_and_test_split_ignores_train_size(world, tmp_path):
    root, _ = world
    generate_world(SMALL.replace(seed=4), tmp_path / "s4", progress=False)
    assert _hashes(tmp_path / "s4")["test_questions.jsonl"] != _hashes(root)["test_questions.jsonl"]
    # The evaluation split depends on the seed and its own size only.
    generate_world(SMALL.replace(n_train_images=13), tmp_path / "t13", progress=False)
    a, b = _hashes(root), _hashes(tmp_path / "t13")
    test_files = [k for k in a if "test" in k]
    assert len(test_files) > 30 and all(a[k] == b[k] for k in test_files)


def test_reuse_conflict_and_overwrite(world, tmp_path):
    root, info = world
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    again = generate_world(SMALL, root, progress=False)
    assert again["reused"] and not info["reused"]
    assert again["counts"] == info["counts"]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == before

    out = tmp_path / "w"
    generate_world(SMALL, out, progress=False)
    smaller = SMALL.replace(n_train_images=5)
    with pytest.raises(GraceError, match="different config"):
        generate_world(smaller, out, progress=False)
    res = generate_world(smaller, out, overwrite=True, progress=False)
    assert not res["reused"]
    # Images of the bigger world do not linger.
    assert len(list((out / "images" / "train").glob("*.png"))) == 5
    # A missing image makes the world incomplete: it is regenerated, not reused.
    (out / "images" / "test" / "000000.png").unlink()
    assert not generate_world(smaller, out, progress=False)["reused"]
    assert (out / "images" / "test" / "000000.png").exists()


def test_load_world_errors(tmp_path):
    with pytest.raises(GraceError, match="world.json"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text("{not json")
    with pytest.raises(GraceError, match="world.json"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(GraceError, match="format"):
        load_world(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GraceError, match="file"):
        generate_world(SMALL, tmp_path / "file", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(GraceError, match="bad.jsonl:2"):
        read_jsonl(bad)


# ---- splits -------------------------------------------------------------------------------------
def test_splits_disjoint_in_images_and_scenes(world):
    root, _ = world
    sigs, img_hashes = {}, {}
    for split in ("train", "val", "test"):
        rows = _scenes(root, split)
        assert len(rows) == SMALL.n_images(split)
        sigs[split] = {tuple(sorted((o["cell"], o["shape"], o["color"], o["size"]) for o in r["objects"]))
                       for r in rows}
        img_hashes[split] = {hashlib.sha256((root / r["image"]).read_bytes()).hexdigest() for r in rows}
        assert all(r["image"].startswith(f"images/{split}/") for r in rows)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not sigs[a] & sigs[b], (a, b)
        assert not img_hashes[a] & img_hashes[b], (a, b)


# ---- answers correct by construction ------------------------------------------------------------
def _position_from_pixels(center, cfg: WorldConfig) -> str:
    cell = cfg.image_size / cfg.grid
    col, row = int(center[0] // cell), int(center[1] // cell)
    return POSITION_NAMES[cfg.grid][row * cfg.grid + col]


def _singular(plural: str) -> str:
    (s,) = [k for k, v in SHAPE_PLURALS.items() if v == plural]
    return s


def _resolve(question: str, objs: list[dict], cfg: WorldConfig) -> str:
    """Answer an English question from the scene record, independently of the generator."""
    def one(pred):
        hits = [o for o in objs if pred(o)]
        assert len(hits) == 1, (question, hits)
        return hits[0]

    def side(s):
        assert len(objs) == 2
        a, b = sorted(objs, key=lambda o: o["center"][0])
        assert _position_from_pixels(a["center"], cfg) != _position_from_pixels(b["center"], cfg)
        return a if s == "left" else b

    pos = lambda o: _position_from_pixels(o["center"], cfg)  # noqa: E731
    rules = [
        (r"What color is the shape in the (.+)\?", lambda m: one(lambda o: pos(o) == m[1])["color"]),
        (r"What color is the shape on the (left|right)\?", lambda m: side(m[1])["color"]),
        (r"What color is the (\w+)\?", lambda m: one(lambda o: o["shape"] == m[1])["color"]),
        (r"What shape is the (\w+) object\?", lambda m: one(lambda o: o["color"] == m[1])["shape"]),
        (r"What shape is on the (left|right)\?", lambda m: side(m[1])["shape"]),
        (r"What shape is in the (.+)\?", lambda m: one(lambda o: pos(o) == m[1])["shape"]),
        (r"How many shapes are there\?", lambda m: str(len(objs))),
        (r"How many (\w+) shapes are there\?", lambda m: str(sum(o["color"] == m[1] for o in objs))),
        (r"How many (\w+) are there\?", lambda m: str(sum(o["shape"] == _singular(m[1]) for o in objs))),
        (r"Where is the (\w+) (\w+)\?", lambda m: pos(one(lambda o: (o["color"], o["shape"]) == (m[1], m[2])))),
        (r"Is there an? (\w+) (\w+) in the image\?",
         lambda m: "yes" if any((o["color"], o["shape"]) == (m[1], m[2]) for o in objs) else "no"),
    ]
    for pattern, fn in rules:
        m = re.fullmatch(pattern, question)
        if m:
            return fn(m)
    raise AssertionError(f"no rule parses {question!r}")


def test_answers_rederived_from_scene_records(world):
    root, _ = world
    for split in ("train", "val", "test"):
        for row in _scenes(root, split):
            for o in row["objects"]:
                assert o["position"] == _position_from_pixels(o["center"], SMALL)
            for q in row["questions"]:
                assert _resolve(q["question"], row["objects"], SMALL) == q["answer"], q
                if q["kind"] == "mc":
                    assert q["options"].count(q["answer"]) == 1 and len(set(q["options"])) == len(q["options"])
                    assert q["options"][ord(q["label"]) - ord("A")] == q["answer"]
                else:
                    assert q["label"] == q["answer"]


def test_question_files_match_scene_records(world):
    root, _ = world
    for split in ("val", "test"):
        qs = read_jsonl(root / f"{split}_questions.jsonl")
        ans = {a["question_id"]: a["answer"] for a in read_jsonl(root / f"{split}_annotations.jsonl")}
        prov = {q["question_id"]: (r, q) for r in _scenes(root, split) for q in r["questions"]}
        assert [q["question_id"] for q in qs] == list(range(len(qs))) and set(ans) == set(prov)
        for q in qs:
            row, p = prov[q["question_id"]]
            assert q["image"] == row["image"] and ans[q["question_id"]] == p["label"]
            stem = q["text"].split("\n")[0]
            assert _resolve(stem, row["objects"], SMALL) == p["answer"]
            if q["kind"] == "mc":
                opts = dict(line.split(". ", 1) for line in q["text"].split("\n")[1:-1])
                assert opts[ans[q["question_id"]]] == p["answer"]


def test_rendered_pixels_match_scene(world):
    root, _ = world
    rows = _scenes(root, "test")
    for row in rows:
        scene = Scene.from_dict(row)
        clean = np.asarray(render(scene, SMALL.image_size, noise=0))
        disk = np.asarray(Image.open(root / row["image"]).convert("RGB")).astype(int)
        assert disk.shape == (SMALL.image_size, SMALL.image_size, 3)
        # The file on disk is the clean render plus bounded noise.
        assert np.abs(disk - clean.astype(int)).max() <= SMALL.noise
        for o in row["objects"]:
            x, y = int(o["center"][0]), int(o["center"][1])
            assert tuple(clean[y, x]) == PALETTE[o["color"]], (row["image"], o)
            # Nearest palette colour of the noisy pixel is still the object's colour.
            nearest = min(PALETTE, key=lambda c: np.sum((disk[y, x] - np.array(PALETTE[c])) ** 2))
            assert nearest == o["color"]
        # Centres of empty cells are plain grey background (or a grey distractor dot).
        occupied = {o["cell"] for o in row["objects"]}
        cell = SMALL.image_size / SMALL.grid
        for c in set(range(SMALL.grid ** 2)) - occupied:
            r_, c_ = divmod(c, SMALL.grid)
            px = clean[int(r_ * cell + cell / 2), int(c_ * cell + cell / 2)]
            assert px[0] == px[1] == px[2]


def test_shapes_are_drawn_as_named():
    """Bounding-box corners separate the shapes: only a square fills them; a triangle only at the base."""
    size, d = 48, 30.0
    def corners(shape):
        scene = Scene((SceneObject(shape, "red", "large", 4, 24.5, 24.5, d),), 230, (), 0)
        img = np.asarray(render(scene, size))
        lo, hi = int(24.5 - d / 2 * 0.8), int(24.5 + d / 2 * 0.8)
        return [tuple(img[y, x]) == PALETTE["red"] for y, x in ((lo, lo), (lo, hi), (hi, lo), (hi, hi))]
    assert corners("square") == [True] * 4
    assert corners("circle") == [False] * 4
    assert corners("cross") == [False] * 4
    assert corners("triangle") == [False, False, True, True]


# ---- balance ------------------------------------------------------------------------------------
def test_balance_yes_no_categories_and_letters(world):
    root, info = world
    for split in ("train", "val", "test"):
        c = info["counts"][split]
        assert abs(c["yes"] - c["no"]) <= 1 and c["yes"] > 0
        assert max(c["by_category"].values()) - min(c["by_category"].values()) <= 1
        qs = [q for r in _scenes(root, split) for q in r["questions"]]
        negs = Counter(q["negative"] for q in qs if q["answer"] == "no")
        assert set(negs) == {"random", "popular", "adversarial"} and max(negs.values()) - min(negs.values()) <= 1
        n_mc = sum(q["kind"] == "mc" for q in qs if q["category"] != "existence")
        n_other = sum(q["category"] != "existence" for q in qs)
        assert abs(n_mc - SMALL.mc_fraction * n_other) <= 4
    letters = Counter(q["label"] for r in _scenes(root, "train") for q in r["questions"] if q["kind"] == "mc")
    assert set(letters) == {"A", "B", "C", "D"}  # options really are shuffled


def test_adversarial_negatives_share_an_attribute(world):
    root, _ = world
    n = 0
    for r in _scenes(root, "train"):
        for q in r["questions"]:
            if q["negative"] == "adversarial":
                c, s = q["params"]["color"], q["params"]["shape"]
                assert any(o["color"] == c or o["shape"] == s for o in r["objects"])
                n += 1
    assert n > 0


# ---- formats ------------------------------------------------------------------------------------
def test_formats(world):
    root, info = world
    manifest = json.loads((root / "world.json").read_text())
    assert manifest["config"] == SMALL.to_dict() and manifest["fingerprint"] == SMALL.fingerprint()
    for split in ("val", "test"):
        qs = read_jsonl(info[split]["questions"])
        ans = read_jsonl(info[split]["annotations"])
        assert len(qs) == len(ans) == info["counts"][split]["questions"] == SMALL.n_images(split) * 5
        for q, a in zip(qs, ans, strict=True):
            assert set(q) == {"question_id", "image", "text", "category", "kind"}
            assert set(a) == {"question_id", "answer"} and a["question_id"] == q["question_id"]
            assert "<image>" not in q["text"] and (root / q["image"]).is_file()
            assert q["category"] in ("colour", "shape", "count", "position", "existence")
            assert q["kind"] == {"existence": "yesno"}.get(q["category"], q["kind"])
            if q["kind"] == "mc":
                assert q["text"].endswith(MC_SUFFIX) and re.fullmatch(r"[A-E]", a["answer"])
                assert re.search(r"\nA\. .+\nB\. .+", q["text"])
            else:
                assert q["text"].endswith(SHORT_SUFFIX) and "\n" not in q["text"][: -len(SHORT_SUFFIX)]
            if q["kind"] == "yesno":
                assert a["answer"] in ("yes", "no")
    for split in ("train", "val"):
        convs = json.loads(Path(info[split]["conversations"]).read_text())
        assert len(convs) == info["counts"][split]["conversations"] == SMALL.n_images(split) * 5
        assert len({c["id"] for c in convs}) == len(convs)
        for c in convs:
            assert set(c) == {"id", "image", "conversations"} and (root / c["image"]).is_file()
            human, gpt = c["conversations"]
            assert human["from"] == "human" and human["value"].startswith("<image>\n")
            assert gpt["from"] == "gpt" and gpt["value"] and "\n" not in gpt["value"]
    img = Image.open(root / "images" / "test" / "000000.png")
    assert img.format == "PNG" and img.mode == "RGB" and img.size == (SMALL.image_size,) * 2


def test_multi_turn_conversations(tmp_path):
    cfg = SMALL.replace(n_train_images=6, n_val_images=2, n_test_images=2, train_multi_turn=True)
    info = generate_world(cfg, tmp_path, progress=False)
    convs = json.loads(Path(info["train"]["conversations"]).read_text())
    assert len(convs) == 6
    for c in convs:
        turns = c["conversations"]
        assert len(turns) == 2 * cfg.questions_per_image
        assert [t["from"] for t in turns] == ["human", "gpt"] * cfg.questions_per_image
        assert sum("<image>" in t["value"] for t in turns) == 1 and turns[0]["value"].startswith("<image>\n")


def test_train_captions_describe_every_object(tmp_path):
    cfg = SMALL.replace(n_train_images=8, n_val_images=2, n_test_images=2, train_captions=True)
    info = generate_world(cfg, tmp_path, progress=False)
    convs = json.loads(Path(info["train"]["conversations"]).read_text())
    caps = [c for c in convs if c["id"].endswith("_caption")]
    assert len(caps) == 8 and len(convs) == 8 * (cfg.questions_per_image + 1)
    scenes = read_jsonl(tmp_path / "train_scenes.jsonl")
    for c, sc in zip(caps, scenes, strict=True):
        assert c["image"] == sc["image"]
        human, gpt = c["conversations"]
        assert human["value"] == "<image>\nDescribe the image."
        objs = sorted(sc["objects"], key=lambda o: o["cell"])
        assert gpt["value"] == " and ".join(f"a {o['color']} {o['shape']} in the {o['position']}" for o in objs)
    # Only the training split is captioned; the evaluation files do not change.
    assert not any("Describe" in q["text"] for q in read_jsonl(tmp_path / "test_questions.jsonl"))
    val = json.loads((tmp_path / "val.json").read_text())
    assert not any(c["id"].endswith("_caption") for c in val)
    # Every caption word is in the tokenizer corpus.
    vocab = set().union(*map(_words, corpus(cfg)))
    assert all(_words(c["conversations"][1]["value"]) <= vocab for c in caps)
    assert "Describe the image." not in corpus(SMALL)


# ---- corpus -------------------------------------------------------------------------------------
def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+|[^\w\s]", text))


def test_corpus_covers_every_text_and_answer(world):
    root, _ = world
    lines = corpus(SMALL)
    vocab = set().union(*map(_words, lines))
    assert lines == sorted(set(lines))
    for split in ("val", "test"):
        for q in read_jsonl(root / f"{split}_questions.jsonl"):
            parts = q["text"].split("\n")
            assert parts[0] in lines  # every question sentence is a corpus line verbatim
            assert all(p in lines for p in parts[1:])  # option lines and the suffix too
        for a in read_jsonl(root / f"{split}_annotations.jsonl"):
            assert a["answer"] in lines
    for c in json.loads((root / "train.json").read_text()):
        for t in c["conversations"]:
            assert _words(t["value"].replace("<image>", "")) <= vocab
    assert corpus() == corpus(WorldConfig())


def test_corpus_follows_config():
    lines = corpus(WorldConfig(shapes=("circle", "star"), colors=("red", "orange"), grid=2))
    assert "Is there an orange star in the image?" in lines
    assert "How many stars are there?" in lines
    assert "How many crosses are there?" in corpus()
    assert "What shape is in the bottom right?" in lines
    assert not any("triangle" in line or "center" in line for line in lines)


# ---- config -------------------------------------------------------------------------------------
def test_config_round_trip_and_validation():
    cfg = WorldConfig(seed=7, shapes=["circle", "star"])
    assert WorldConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.fingerprint() != cfg.replace(seed=8).fingerprint()
    for bad, field in [({"grid": 4}, "grid"), ({"shapes": ("circle", "blob")}, "shapes"),
                       ({"colors": ("red",)}, "colors"), ({"max_objects": 10}, "max_objects"),
                       ({"image_size": 12}, "image_size"), ({"mc_fraction": 1.5}, "mc_fraction"),
                       ({"n_test_images": 0}, "n_test_images"), ({"categories": ("size",)}, "categories"),
                       ({"n_train_images": -1}, "n_train_images"), ({"n_options": 9}, "n_options"),
                       ({"sizes": ("huge",)}, "sizes"), ({"sizes": ()}, "sizes")]:
        with pytest.raises(WorldConfigError, match=field):
            WorldConfig(**bad)
    with pytest.raises(WorldConfigError, match="unknown"):
        WorldConfig.from_dict({"seed": 1, "colour": "red"})


def test_sizes_restrict_the_drawn_object_sizes():
    rng = random.Random(5)
    cfg = WorldConfig(sizes=("large",))
    sizes = {o.size for _ in range(200) for o in sample_scene(cfg, rng).objects}
    assert sizes == {"large"}
    both = {o.size for _ in range(200) for o in sample_scene(WorldConfig(), rng).objects}
    assert both == {"small", "large"}


def test_scene_space_exhaustion_is_a_clear_error(tmp_path):
    # 2 shapes x 2 colours x 2 sizes x 4 cells = 32 one-object scenes: 40 test scenes cannot all be
    # disjoint from 40 validation scenes.
    cfg = WorldConfig(grid=2, shapes=("circle", "square"), colors=("red", "blue"), max_objects=1,
                      n_train_images=40, n_val_images=40, n_test_images=40)
    with pytest.raises(GraceError, match="disjoint"):
        generate_world(cfg, tmp_path, progress=False)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), grid=st.sampled_from([2, 3]), size=st.sampled_from([32, 48, 64]),
       max_objects=st.integers(1, 4))
def test_sampled_scenes_are_well_formed(seed, grid, size, max_objects):
    cfg = WorldConfig(grid=grid, image_size=size, max_objects=max_objects)
    scene = sample_scene(cfg, random.Random(seed))
    objs = scene.objects
    assert 1 <= len(objs) <= max_objects
    assert len({o.cell for o in objs}) == len(objs)
    assert len({(o.color, o.shape) for o in objs}) == len(objs)
    cell = size / grid
    for o in objs:
        row, col = divmod(o.cell, grid)
        # The whole bounding box stays inside the object's own cell.
        assert col * cell <= o.cx - o.diameter / 2 and o.cx + o.diameter / 2 <= (col + 1) * cell
        assert row * cell <= o.cy - o.diameter / 2 and o.cy + o.diameter / 2 <= (row + 1) * cell
        assert o.cx % 1 == 0.5 and o.cy % 1 == 0.5


# ---- answer prior -------------------------------------------------------------------------------
def test_answer_prior_hand_worked():
    recs = [{"category": "colour", "kind": "short", "answer": a} for a in ("red", "red", "blue", "green")]
    recs += [{"category": "colour", "kind": "mc", "answer": a} for a in ("A", "B")]  # tie -> "A"
    recs += [{"category": "existence", "kind": "yesno", "answer": a} for a in ("yes", "no", "no")]
    prior = answer_prior(recs)
    assert prior == {"colour": 3 / 6, "existence": 2 / 3, "overall": 5 / 9}
    # Majority fitted elsewhere: "blue" learnt from fit, so only the one blue record hits.
    fit = [{"category": "colour", "kind": "short", "answer": "blue"}]
    assert answer_prior(recs[:4], fit=fit) == {"colour": 0.25, "overall": 0.25}


def test_world_answer_prior(world):
    root, info = world
    prior = world_answer_prior(root)
    assert prior == info["answer_prior"]["test"]
    assert prior["existence"] == 0.5
    assert set(prior) == {"colour", "shape", "count", "position", "existence", "overall"}
    assert all(0 < v < 1 for v in prior.values())
    assert set(world_answer_prior(root, fit_split="train")) == set(prior)


def test_contact_sheet(world, tmp_path):
    root, _ = world
    out = contact_sheet(root, n=10, cols=5, scale=2, path=tmp_path / "sheet.png")
    w, h = Image.open(out).size
    assert w == 5 * (SMALL.image_size * 2 + 2) + 2 and h > 2 * SMALL.image_size * 2
