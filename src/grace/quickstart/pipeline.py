"""``grace quickstart``: the GRACE paper's comparison in miniature, end to end, on a CPU.

    res = grace.quickstart.run("runs/quickstart", seeds=3)       # or: grace quickstart --seeds 3
    res["rows"][0]["accuracy"]                                   # results.json / .md / .png too

Stages (each cached in its own directory; see :func:`_stage`):
world -> tokenizer -> per seed: teacher (sft) -> student (kd from the teacher, dense) ->
{RTN, QAT-only, GRACE} x bits -> pack the W4 models -> evaluate every model on the TEST split
(``synthvqa`` via :func:`grace.eval.run_benchmark`) -> decode speed side by side -> report.

Invariants, and why:
* **Caching**: a stage's directory is trusted only if its ``stage.json`` (written last, by
  atomic rename) carries the stage's key: the hash of the config fields it reads and its
  inputs' keys. Otherwise the directory is wiped and the stage re-runs, so an interrupted run
  resumes at the first unfinished stage and a changed knob re-runs only what depends on it.
* **Honest evaluation**: the test split is only scored, never used for a choice; the presets
  were picked on the validation split (whose accuracy is recorded for teacher and student).
* **Seeds**: one world (``--seed``), K model seeds (``seed + k``): each seed re-initialises
  every model and re-orders the data; the test questions are the same for every seed.
* QAT-only and GRACE get the same start (the dense student), steps, data order and learning
  rate; they differ only in the loss (GRACE.md §7).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from grace.quickstart.config import QuickConfig, digest

STAGE_FILE = "stage.json"
BENCH = "synthvqa"
CATEGORY_ORDER = ("colour", "shape", "count", "position", "existence")
KIND_ORDER = ("short", "mc", "yesno")
METHODS = ("rtn", "qat", "grace")
METHOD_LABEL = {"rtn": "RTN", "qat": "QAT-only", "grace": "GRACE"}


class _Log:
    """Console output through rich (one place, so tests can silence it)."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        probe = Console()
        # The table is wide; when output is piped (no terminal) rich would fold it to 80 columns.
        self.console = Console(quiet=quiet, width=None if probe.is_terminal else 200)

    def __call__(self, msg: str) -> None:
        self.console.print(msg)


# ---------------------------------------------------------------------------------------------
# Stage cache
# ---------------------------------------------------------------------------------------------


def _read_stage(d: Path) -> dict | None:
    try:
        return json.loads((d / STAGE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _stage(d: Path, key: str, build, log: _Log, label: str, ledger: list) -> dict:
    """Return the stage's manifest, building it with ``build(d) -> dict`` unless cached with ``key``."""
    m = _read_stage(d)
    if m is not None and m.get("key") == key:
        ledger.append({"stage": label, "reused": True, "seconds": 0.0})
        return m
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    log(f"[bold cyan]stage[/] {label}")
    t0 = time.perf_counter()
    info = build(d) or {}
    seconds = time.perf_counter() - t0
    m = {"key": key, "stage": label, "seconds": round(seconds, 2), **info}
    _write_json_atomic(d / STAGE_FILE, m)
    ledger.append({"stage": label, "reused": False, "seconds": round(seconds, 2)})
    log(f"  done in {seconds:.1f} s")
    return m


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


class _Encoded(torch.utils.data.Dataset):
    """The world's training conversations, encoded once (the records are tiny; images are 32 px)."""

    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


_ENCODED: dict[str, _Encoded] = {}


def _train_dataset(world_dir: Path, world_key: str, tok_key: str, vlm) -> _Encoded:
    from PIL import Image

    from grace.models import encode_example

    k = f"{world_key}{tok_key}:{getattr(vlm.model.config, 'image_seq_length', '')}"  # tokens per image
    if k not in _ENCODED:
        recs = json.loads((world_dir / "train.json").read_text())
        cache: dict[str, Any] = {}
        exs = []
        for r in recs:
            img = cache.get(r["image"])
            if img is None:
                with Image.open(world_dir / r["image"]) as im:
                    img = cache[r["image"]] = im.convert("RGB")
            exs.append(encode_example(vlm, vlm.tokenizer, vlm.processor, r["conversations"], img))
        _ENCODED.clear()
        _ENCODED[k] = _Encoded(exs)
    return _ENCODED[k]


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def _load(path: Path, **kw):
    import grace

    return grace.load(path, **kw)


def _train_model(d: Path, *, mode: str, student, teacher, ds, tok, proc, steps: int, lr: float, seed: int,
                 batch: int, bits: int = 4, group_size: int = 128, freeze: list[str] | None = None) -> dict:
    from grace.models import collate
    from grace.train import TrainConfig, train

    kw: dict[str, Any] = {}
    if freeze is not None:
        kw["freeze"] = freeze
    cfg = TrainConfig(mode=mode, output_dir=str(d / "run"), max_steps=steps, lr=lr, micro_batch_size=batch,
                      seed=seed, save_every=0, mixed_precision="no", bits=bits, group_size=group_size,
                      warmup_steps=max(1, steps // 20), rcka_warmup_steps=max(1, steps // 4),
                      weight_decay=0.0, **kw)
    res = train(cfg, student=student, teacher=teacher, dataset=ds, tokenizer=tok, processor=proc,
                collate_fn=partial(collate, pad_token_id=tok.pad_token_id))
    last = {k: v for k, v in res.last.items() if v is not None}
    return {"model": str(Path("run") / "model"), "steps": res.steps, "last": last,
            "beta": res.beta}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _bench(max_new_tokens: int = 8):
    from grace.eval import get_benchmark

    # Every synthvqa answer is at most 3 tokens here; 8 new tokens leave room for an answer that
    # runs on (still scored wrong) without paying 128 decode steps for a broken model.
    b = copy.copy(get_benchmark(BENCH))
    b.max_new_tokens = max_new_tokens
    return b


def _evaluate(vlm, world_dir: Path, split: str, out: Path, limit: int | None, batch: int) -> dict:
    from grace.eval import run_benchmark

    files = [world_dir / f"{split}_questions.jsonl", world_dir / f"{split}_annotations.jsonl"]
    res = run_benchmark(vlm, _bench(), files, out, limit=limit, batch_size=batch, image_dir=world_dir)
    m = res["metrics"]
    return {"accuracy": m["accuracy"],
            "categories": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("category/")},
            "kinds": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("kind/")},
            "questions": res["run"]["questions"], "eval_seconds": res["run"]["seconds"]}


@torch.inference_mode()
def _decode_tps(vlm, image, query: str, n_tokens: int) -> float:
    """End-to-end greedy generation rate (prefill included) for exactly ``n_tokens`` new tokens."""
    inputs = vlm.prepare(image, query)
    pad = vlm.tokenizer.pad_token_id
    kw = dict(max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False, pad_token_id=pad,
              temperature=None, top_p=None, top_k=None, use_cache=True)
    vlm.model.generate(**inputs, **dict(kw, max_new_tokens=2, min_new_tokens=2))  # warm-up
    t0 = time.perf_counter()
    vlm.model.generate(**inputs, **kw)
    return n_tokens / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(out_dir: str | Path = "runs/quickstart", *, seed: int = 0, seeds: int = 1, fast: bool = False,
        config: QuickConfig | None = None, quiet: bool = False, workers: int = 1) -> dict:
    """Run (or resume) the whole quickstart; returns the results dict also written to results.json.

    ``workers > 1`` trains the seeds in that many processes at once (each with ``cfg.threads``).
    """
    from grace.data.synthetic import WorldConfig, generate_world, world_answer_prior
    from grace.quickstart.report import write_report
    from grace.quickstart.tokenizer import load_tokenizer, train_tokenizer

    cfg = config or QuickConfig.preset("fast" if fast else "default")
    if seeds < 1:
        from grace.errors import GraceError

        raise GraceError(f"--seeds must be >= 1; got {seeds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(quiet)
    ledger: list[dict] = []
    t_start = time.perf_counter()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        # -- world + tokenizer ---------------------------------------------------------------
        wcfg = WorldConfig.from_dict({**cfg.world, "seed": seed})
        world_dir = out / "world"
        wkey = digest("world", wcfg.fingerprint())
        _stage(out / "world_stage", wkey,
               lambda d: {"world": generate_world(wcfg, world_dir, overwrite=True).get("counts")},
               log, "world", ledger)
        tkey = digest("tokenizer", wkey, 2)
        _stage(out / "tokenizer", tkey, lambda d: {"vocab": len(train_tokenizer(wcfg, d))}, log, "tokenizer", ledger)
        tok = load_tokenizer(out / "tokenizer")
        prior = world_answer_prior(world_dir)

        todo = [seed + k for k in range(seeds)]
        n_workers = max(1, min(workers or 1, seeds))
        if n_workers == 1:
            per_seed = [_run_seed(out, cfg, s, world_dir, wkey, tkey, tok, log, ledger) for s in todo]
        else:
            # Seeds are independent stage trees: run them in worker processes (one torch thread each).
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as pool:
                futs = [pool.submit(_seed_worker, out, cfg, s, world_dir, wkey, tkey, quiet) for s in todo]
                per_seed = []
                for f in futs:
                    ps, led = f.result()
                    per_seed.append(ps)
                    ledger.extend(led)
        results = {
            "config": cfg.to_dict(), "world": wcfg.to_dict(), "seed": seed, "seeds": [seed + k for k in range(seeds)],
            "answer_prior": prior, "per_seed": per_seed, "stages": ledger,
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "machine": {"torch_threads": cfg.threads, "cpu_count": os.cpu_count(), "workers": n_workers},
        }
        results["rows"] = _aggregate(per_seed, cfg)
        write_report(results, out, log)
        return results
    finally:
        torch.set_num_threads(prev_threads)


def _seed_worker(out: Path, cfg: QuickConfig, s: int, world_dir: Path, wkey: str, tkey: str, quiet: bool):
    from grace.quickstart.tokenizer import load_tokenizer

    torch.set_num_threads(cfg.threads)
    ledger: list = []
    ps = _run_seed(out, cfg, s, world_dir, wkey, tkey, load_tokenizer(out / "tokenizer"), _Log(quiet), ledger)
    return ps, ledger


def _run_seed(out: Path, cfg: QuickConfig, s: int, world_dir: Path, wkey: str, tkey: str, tok, log: _Log,
              ledger: list) -> dict:
    from grace.config import QuantSpec
    from grace.formats.pack_dir import pack_checkpoint
    from grace.io import save_checkpoint
    from grace.models.tiny import make_tiny
    from grace.quant.api import rtn_quantize

    root = out / f"seed{s}"
    models: dict[str, dict] = {}  # name -> {"dir": Path, "key": str, "kind": "dense"|"fake"|"packed", "bits"}
    ds_holder: dict[str, Any] = {}

    def dataset(vlm):
        if "ds" not in ds_holder:
            ds_holder["ds"] = _train_dataset(world_dir, wkey, tkey, vlm)
        return ds_holder["ds"]

    # -- teacher and dense student ------------------------------------------------------------
    t_key = digest("teacher", tkey, s, cfg.batch, cfg.teacher_steps, cfg.teacher_lr, cfg.vision, cfg.teacher_text)

    def build_teacher(d: Path) -> dict:
        vlm = make_tiny("llava", size="teacher", seed=s, tokenizer=tok, vision=cfg.vision, text=cfg.teacher_text)
        return _train_model(d, mode="sft", student=vlm.model, teacher=None, ds=dataset(vlm), tok=tok,
                            proc=vlm.processor, steps=cfg.teacher_steps, lr=cfg.teacher_lr, seed=s,
                            batch=cfg.batch, freeze=[])

    m = _stage(root / "teacher", t_key, build_teacher, log, f"seed {s}: train teacher (sft)", ledger)
    models["teacher"] = {"dir": root / "teacher" / m["model"], "key": t_key, "kind": "dense", "bits": 16}

    s_key = digest("student", t_key, cfg.student_steps, cfg.student_lr)

    def build_student(d: Path) -> dict:
        vlm = make_tiny("llava", size="student", seed=s + 1000, tokenizer=tok, vision=cfg.vision)
        teacher = _load(models["teacher"]["dir"], dtype=torch.float32).model
        return _train_model(d, mode="kd", student=vlm.model, teacher=teacher, ds=dataset(vlm), tok=tok,
                            proc=vlm.processor, steps=cfg.student_steps, lr=cfg.student_lr, seed=s,
                            batch=cfg.batch, freeze=[])

    m = _stage(root / "student", s_key, build_student, log, f"seed {s}: train student (kd, dense)", ledger)
    models["student"] = {"dir": root / "student" / m["model"], "key": s_key, "kind": "dense", "bits": 16}

    # -- quantized students -------------------------------------------------------------------
    for bits in cfg.bits:
        spec = QuantSpec(bits=bits, group_size=cfg.group_size)
        r_key = digest("rtn", s_key, bits, cfg.group_size)

        def build_rtn(d: Path, spec=spec) -> dict:
            vlm = _load(models["student"]["dir"], dtype=torch.float32)
            names = rtn_quantize(vlm.model, spec)
            save_checkpoint(vlm.model, vlm.tokenizer, vlm.processor, d / "model", family="llava")
            return {"model": "model", "modules": len(names)}

        m = _stage(root / f"rtn_w{bits}", r_key, build_rtn, log, f"seed {s}: RTN W{bits}G{cfg.group_size}", ledger)
        models[f"rtn_w{bits}"] = {"dir": root / f"rtn_w{bits}" / m["model"], "key": r_key, "kind": "fake", "bits": bits}

        for mode in ("qat", "grace"):
            q_key = digest(mode, s_key, t_key, bits, cfg.group_size, cfg.quant_steps, cfg.quant_lr, cfg.batch)

            def build_q(d: Path, mode=mode, bits=bits) -> dict:
                vlm = _load(models["student"]["dir"], dtype=torch.float32)
                teacher = _load(models["teacher"]["dir"], dtype=torch.float32).model if mode == "grace" else None
                return _train_model(d, mode=mode, student=vlm.model, teacher=teacher, ds=dataset(vlm), tok=tok,
                                    proc=vlm.processor, steps=cfg.quant_steps, lr=cfg.quant_lr, seed=s,
                                    batch=cfg.batch, bits=bits, group_size=cfg.group_size)

            m = _stage(root / f"{mode}_w{bits}", q_key, build_q, log,
                       f"seed {s}: {METHOD_LABEL[mode]} W{bits}G{cfg.group_size}", ledger)
            models[f"{mode}_w{bits}"] = {"dir": root / f"{mode}_w{bits}" / m["model"], "key": q_key, "kind": "fake",
                                         "bits": bits}

    # -- pack the W4 models (the deployable artefacts) -----------------------------------------
    for method in METHODS:
        src = models[f"{method}_w4"]
        p_key = digest("pack", src["key"])

        def build_pack(d: Path, src=src) -> dict:
            rep = pack_checkpoint(src["dir"], d / "model", bits=4)
            return {"model": "model", "bytes_before": rep.bytes_before, "bytes_after": getattr(rep, "bytes_after", None)}

        m = _stage(root / f"{method}_w4_packed", p_key, build_pack, log, f"seed {s}: pack {METHOD_LABEL[method]} W4",
                   ledger)
        # The W4 rows are evaluated packed (INT4 tensors through grace.load), as deployed.
        models[f"{method}_w4"] = {"dir": root / f"{method}_w4_packed" / "model", "key": p_key, "kind": "packed",
                                  "bits": 4}

    # -- evaluate every model on the test split (teacher / student also on val) -----------------
    evals: dict[str, dict] = {}
    for name, info in models.items():
        e_key = digest("eval", info["key"], cfg.eval_limit, cfg.val_limit, cfg.eval_batch, 2)

        def build_eval(d: Path, name=name, info=info) -> dict:
            vlm = _open(info)
            res = {"test": _evaluate(vlm, world_dir, "test", d / "test", cfg.eval_limit, cfg.eval_batch),
                   "footprint": vlm.footprint(), "kernel": vlm.kernel_name, "kind": info["kind"], "bits": info["bits"]}
            if name in ("teacher", "student"):
                res["val"] = _evaluate(vlm, world_dir, "val", d / "val", cfg.val_limit, cfg.eval_batch)
            return res

        evals[name] = _stage(root / "eval" / name, e_key, build_eval, log, f"seed {s}: evaluate {name}", ledger)

    # -- decode speed, the dense student and every packed W4 model side by side ----------------
    sp_names = ["student"] + [f"{m}_w4" for m in METHODS]
    sp_key = digest("speed", [models[n]["key"] for n in sp_names], cfg.speed_tokens, cfg.speed_repeats, cfg.threads)

    def build_speed(d: Path) -> dict:
        q = json.loads((world_dir / "test_questions.jsonl").read_text().splitlines()[0])
        from PIL import Image

        with Image.open(world_dir / q["image"]) as im:
            image = im.convert("RGB")
        vlms = {n: _open(models[n]) for n in sp_names}
        rates: dict[str, list[float]] = {n: [] for n in sp_names}
        for _ in range(cfg.speed_repeats):  # interleaved, so machine load hits every model alike
            for n in sp_names:
                rates[n].append(_decode_tps(vlms[n], image, q["text"], cfg.speed_tokens))
        return {"tokens_per_s": {n: statistics.median(v) for n, v in rates.items()}, "samples": rates,
                "kernels": {n: vlms[n].kernel_name for n in sp_names}}

    speed = _stage(root / "speed", sp_key, build_speed, log, f"seed {s}: decode speed", ledger)
    return {"seed": s, "evals": {n: {k: v for k, v in e.items() if k not in ("key",)} for n, e in evals.items()},
            "speed": speed}


def _open(info: dict):
    if info["kind"] == "dense":
        # The dense rows are the BF16 baselines of the paper: loaded in bfloat16.
        return _load(info["dir"], dtype=torch.bfloat16)
    if info["kind"] == "fake":
        return _load(info["dir"], dtype=torch.float32, qat_as="fake")
    return _load(info["dir"])


# ---------------------------------------------------------------------------------------------
# Aggregation over seeds
# ---------------------------------------------------------------------------------------------


def _ms(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _aggregate(per_seed: list[dict], cfg: QuickConfig) -> list[dict]:
    names = ["teacher", "student"] + [f"{m}_w{b}" for b in cfg.bits for m in METHODS]
    rows = []
    for name in names:
        accs = [ps["evals"][name]["test"]["accuracy"] for ps in per_seed]
        base = [ps["evals"]["student"]["test"]["accuracy"] for ps in per_seed]
        rets = [100.0 * a / b if b else float("nan") for a, b in zip(accs, base, strict=True)]
        e0 = per_seed[0]["evals"][name]
        method, _, bits = name.partition("_w")
        row = {
            "name": name,
            "label": ("teacher (bf16)" if name == "teacher" else "student (bf16)" if name == "student"
                      else f"{METHOD_LABEL[method]} W{bits}G{cfg.group_size}"),
            "method": method if bits else name, "bits": int(bits) if bits else 16,
            "group_size": cfg.group_size if bits else None, "form": e0["kind"],
            "accuracy": _ms(accs)[0], "accuracy_std": _ms(accs)[1], "accuracy_per_seed": accs,
            "retention": _ms(rets)[0], "retention_std": _ms(rets)[1],
            "categories": {c: _ms([ps["evals"][name]["test"]["categories"].get(c) for ps in per_seed])[0]
                           for c in CATEGORY_ORDER if c in e0["test"]["categories"]},
            "kinds": {c: _ms([ps["evals"][name]["test"]["kinds"].get(c) for ps in per_seed])[0]
                      for c in KIND_ORDER if c in e0["test"]["kinds"]},
            "footprint_bytes": e0["footprint"]["total"] if e0["kind"] != "fake" else None,
            "lm_bytes": e0["footprint"].get("language_model") if e0["kind"] != "fake" else None,
            "kernel": e0["kernel"], "test_questions": e0["test"]["questions"],
        }
        if "val" in e0:
            row["val_accuracy"] = _ms([ps["evals"][name]["val"]["accuracy"] for ps in per_seed])[0]
        tps = [ps["speed"]["tokens_per_s"].get(name) for ps in per_seed]
        if all(t is not None for t in tps):
            ref = [ps["speed"]["tokens_per_s"]["student"] for ps in per_seed]
            row["tokens_per_s"] = _ms(tps)[0]
            row["speedup_vs_bf16"] = _ms([t / r for t, r in zip(tps, ref, strict=True)])[0]
        rows.append(row)
    return rows
