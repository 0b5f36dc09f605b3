"""The GRACE training loop (SFT, QAT, KD and GRACE modes) on ``accelerate``.

    result = grace.train.train(TrainConfig(mode="grace", output_dir="runs/x"),
                               student=student, teacher=teacher, dataset=ds, tokenizer=tok)

Per optimizer step ``k`` (GRACE.md §1, §5):

    L = CE + beta_k * s_dkd(k) * L_GDKD + omega * s_rcka(k) * L_RCKA

Invariants, and why they hold:

* **One code path for every engine.** The student and optimizer go through
  ``accelerator.prepare`` and every micro-step through ``accelerator.accumulate`` /
  ``accelerator.backward``, so the same code runs single-process, DDP (``torchrun`` /
  ``accelerate launch``), FSDP or DeepSpeed. The data order is ours (:class:`RankBatchSampler`),
  not accelerate's, so it is identical however the global batch is split.
* **Exact loss normalisation.** CE is the mean over the supervised tokens of the *whole* global
  batch: before the micro-steps the local token counts are all-reduced, and each micro-step's
  summed CE is scaled by ``world * accum / N_global`` (accelerate divides by ``accum`` and DDP
  averages over ``world``). So 2 processes x 1 micro-batch and 1 process x 2 micro-batches
  produce the same gradient. GDKD and RCKA are per-micro-batch means, averaged with equal weight
  over micro-steps and ranks (they are ratios with their own normalisers).
* **The teacher** is frozen (``eval()``, ``requires_grad=False``), not in the optimizer and not
  prepared; it runs under ``no_grad`` and the same autocast as the student, and must share the
  student's vocabulary. Its penultimate-layer output is captured with a forward hook.
* **IB controller**: one update per optimizer step, with GDKD averaged over the micro-steps and
  ranks that produced a finite value, so every rank holds the same beta. A non-finite GDKD or
  RCKA contributes neither value nor gradient that micro-step and is counted; a non-finite CE
  stops the run (it means the model or data is broken, not the distillation).
* **Resume is exact**: checkpoints hold model, optimizer, RNG states (accelerate), LR scheduler,
  controller, data position (= the step) and the bad-record tally; the data order, LR, ramps
  and beta are pure functions of the step and that state, so a resumed run repeats the
  uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from grace.data.conversations import SkipReport, pad_collate
from grace.data.templates import IGNORE_INDEX
from grace.distill import IBController, LayerCapture, gdkd, hidden_state_module, rcka
from grace.errors import GraceError
from grace.quant.api import bake, param_groups, qat_modules, quantize
from grace.train import checkpoint as ckpt
from grace.train.config import ConfigError, TrainConfig
from grace.train.schedule import RankBatchSampler, lr_factor, ramp

__all__ = ["train", "TrainResult", "LOG_FILE", "MODEL_DIR"]

LOG_FILE = "log.jsonl"
MODEL_DIR = "model"
CONFIG_FILE = "config.json"


@dataclass
class TrainResult:
    """What a finished run produced. ``model`` is the trained student (baked when quantized)."""

    output_dir: Path
    model_dir: Path | None
    steps: int
    beta: float | None
    last: dict
    skipped: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _resolve_save_fn(save_fn: Callable | None, cfg: TrainConfig) -> Callable | None:
    """The final-checkpoint writer: the caller's, else ``grace.io.save_checkpoint``.

    Resolved *before* training so a missing writer is reported in the first second, not after
    the last step. Imported lazily: the writer belongs to grace.io.
    """
    if save_fn is not None or not cfg.save_final:
        return save_fn
    try:
        from grace.io import save_checkpoint
    except ImportError:
        raise GraceError("save_final: grace.io.save_checkpoint is not available in this installation; pass "
                         "save_fn=... to grace.train.train or set save_final=false") from None
    return save_checkpoint


def _resolve_precision(name: str) -> str:
    if name != "auto":
        return name
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _has_accelerator() -> bool:
    probe = getattr(torch, "accelerator", None)
    return bool(probe.is_available()) if probe is not None else torch.cuda.is_available()


def _release_accelerator() -> None:
    """Forget accelerate's process-wide singletons (not the process group) so train() can run again."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _vocab_size(model: nn.Module) -> int:
    head = model.get_output_embeddings()
    if head is None:
        raise ConfigError(f"{type(model).__name__} has no output embedding (lm_head)")
    return int(head.weight.shape[0])


def _image_token_id(cfg: TrainConfig, model: nn.Module) -> int:
    if cfg.image_token_id is not None:
        return cfg.image_token_id
    c = model.config
    for key in ("image_token_id", "image_token_index"):
        v = getattr(c, key, None)
        if v is not None:
            return int(v)
    raise ConfigError("image_token_id: the student's config names no image token; set image_token_id")


def _apply_freeze(model: nn.Module, patterns: list[str]) -> int:
    import re

    regs = [re.compile(p) for p in patterns]
    n = 0
    for name, p in model.named_parameters():
        if any(r.fullmatch(name) for r in regs):
            p.requires_grad_(False)
            n += 1
    return n


def _family(model: nn.Module) -> str:
    return str(getattr(model.config, "model_type", "unknown"))


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels" and not k.startswith("_")}


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _rewrite_log(path: Path, upto_step: int) -> None:
    """Keep only the log lines of steps ``<= upto_step`` (a resumed run re-logs the rest)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= upto_step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    path.write_text("".join(k + "\n" for k in keep))


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, *, student: nn.Module | None = None, teacher: nn.Module | None = None,
          dataset=None, collate_fn: Callable | None = None, tokenizer=None, processor=None,
          save_fn: Callable | None = None, resume: bool = False,
          on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Run one training job; see the module docstring. Models and data not given are built from ``cfg``.

    ``save_fn(model, tokenizer, processor, out_dir, layout=..., family=...)`` writes the final
    checkpoint (default: ``grace.io.save_checkpoint``). ``on_step(record)`` is called on every
    process after each optimizer step with that step's log record.
    """
    save_fn = _resolve_save_fn(save_fn, cfg)
    if student is None or dataset is None or (cfg.distill and teacher is None):
        from grace.train.build import build_inputs

        built = build_inputs(cfg, student=student, teacher=teacher, dataset=dataset, tokenizer=tokenizer,
                             processor=processor)
        student, teacher, dataset = built.student, built.teacher, built.dataset
        tokenizer, processor = built.tokenizer, built.processor
        collate_fn = collate_fn or built.collate_fn
    if collate_fn is None:
        pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        collate_fn = partial(pad_collate, pad_token_id=pad_id if pad_id is not None else 0)
    if not cfg.distill:
        teacher = None
    try:
        return _train(cfg, student, teacher, dataset, collate_fn, tokenizer, processor,
                      save_fn, resume, on_step)
    finally:
        _release_accelerator()


def _train(cfg, student, teacher, dataset, collate_fn, tokenizer, processor, save_fn, resume, on_step):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
    from tqdm import tqdm

    out = Path(cfg.output_dir)
    acc = Accelerator(
        # accelerate only runs several CPU processes (gloo) when told it is on CPU.
        cpu=not _has_accelerator(),
        mixed_precision=_resolve_precision(cfg.mixed_precision),
        gradient_accumulation_steps=cfg.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)],
    )
    set_seed(cfg.seed)
    world, rank = acc.num_processes, acc.process_index

    existing = ckpt.latest_checkpoint(out)
    if existing is not None and not resume:
        raise GraceError(f"{out}: already holds checkpoints ({existing.name}); pass --resume to continue "
                         "that run or choose another output_dir")

    # -- student -----------------------------------------------------------------------------
    _apply_freeze(student, cfg.freeze)
    student.to(acc.device)
    has_qat = bool(qat_modules(student))
    if cfg.quantized and not has_qat:
        try:
            quantize(student, cfg.quant_spec())
        except ValueError as e:
            raise ConfigError(f"mode {cfg.mode}: {e}") from None
    elif not cfg.quantized and has_qat:
        raise ConfigError(f"mode {cfg.mode} trains a floating-point student, but the student already has "
                          f"QAT modules; use mode qat or grace")
    if cfg.gradient_checkpointing:
        # Non-reentrant: works with a frozen embedding / vision tower and with forward hooks.
        kw = {"use_reentrant": False}
        if hasattr(student, "activation_checkpointing_enable"):  # transformers >= 5.x name
            student.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
        else:
            student.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    if getattr(student, "config", None) is not None:
        student.config.use_cache = False
    student.train()
    if not any(p.requires_grad for p in student.parameters()):
        raise ConfigError("freeze: every student parameter is frozen; nothing to train")

    # -- teacher -----------------------------------------------------------------------------
    vocab = _vocab_size(student)
    t_layer = s_layer = None
    image_id = None
    if teacher is not None:
        tv = _vocab_size(teacher)
        if tv != vocab:
            raise ConfigError(f"teacher vocabulary ({tv} logits) differs from the student's ({vocab}): GDKD "
                              "compares distributions token by token, so both must share one tokenizer")
        teacher.eval().requires_grad_(False)
        teacher.to(acc.device)
        if cfg.use_rcka:
            t_layer = hidden_state_module(teacher, cfg.rcka_layer)
            s_layer = hidden_state_module(student, cfg.rcka_layer)
            image_id = _image_token_id(cfg, student)

    # -- optimizer, schedule, data ------------------------------------------------------------
    optimizer = torch.optim.AdamW(
        param_groups(student, lr=cfg.lr, weight_decay=cfg.weight_decay, scale_lr=cfg.scale_lr),
        lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
    global_batch = cfg.micro_batch_size * cfg.grad_accum * world
    steps_per_epoch = len(dataset) // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(f"the dataset has {len(dataset)} records, fewer than one global batch of {global_batch} "
                          f"(micro_batch_size {cfg.micro_batch_size} x grad_accum {cfg.grad_accum} x {world} processes)")
    total = cfg.max_steps if cfg.max_steps is not None else steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, total=total, warmup=warmup, kind=cfg.lr_schedule, min_ratio=cfg.min_lr_ratio))

    # A sharding engine (FSDP, DeepSpeed ZeRO) leaves no rank holding the whole student, so the
    # final bake-and-save works on a parameter-free skeleton filled from the gathered state dict.
    skeleton = meta_skeleton(student) if _shards_parameters(acc) else None
    model, optimizer = acc.prepare(student, optimizer)
    controller = IBController(cfg.ib_tau, cfg.ib_eta, cfg.beta_init, cfg.beta_min, cfg.beta_max, cfg.ib_ema_decay) \
        if cfg.distill else None
    skipped = SkipReport()

    # -- resume ------------------------------------------------------------------------------
    start = 0
    log_path = out / LOG_FILE
    if resume and existing is not None:
        state = ckpt.read_state(existing)
        for key, now in (("global_batch", global_batch), ("dataset_size", len(dataset)), ("mode", cfg.mode),
                         ("total_steps", total)):
            if state.get(key) != now:
                raise GraceError(f"{existing}: cannot resume: {key} was {state.get(key)!r}, now {now!r}")
        acc.load_state(str(existing))
        start = int(state["step"])
        scheduler.load_state_dict(state["scheduler"])
        if controller is not None:
            controller.load_state_dict(state["controller"])
        skipped.extend(tuple(s) for s in state.get("skipped", []))
        if acc.is_main_process:
            _rewrite_log(log_path, start)
        acc.print(f"resumed from {existing} at step {start}/{total}")
    elif resume:
        acc.print(f"--resume: no checkpoint in {out}; starting from step 0")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(cfg.to_json())
        if start == 0:
            log_path.write_text("")
    acc.wait_for_everyone()

    sampler = RankBatchSampler(len(dataset), micro=cfg.micro_batch_size, accum=cfg.grad_accum, world=world,
                               rank=rank, seed=cfg.seed, start_step=start, total_steps=total)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn,
                                         num_workers=cfg.num_workers, pin_memory=acc.device.type == "cuda")
    batches = iter(loader)
    bar = tqdm(total=total, initial=start, disable=not (cfg.progress and acc.is_main_process),
               desc=f"{cfg.mode}", dynamic_ncols=True)

    record: dict = {}
    for k in range(start, total):
        t0 = time.perf_counter()
        micro = [next(batches) for _ in range(cfg.grad_accum)]
        for b in micro:
            skipped.extend(b.pop("_skipped", []))
        n_local = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)
        n_global = int(acc.reduce(torch.tensor([n_local], device=acc.device), reduction="sum").item())
        ce_scale = world * cfg.grad_accum / max(n_global, 1)
        beta = controller.beta if controller is not None else None
        s_dkd, s_rcka = ramp(k, cfg.dkd_warmup_steps), ramp(k, cfg.rcka_warmup_steps)
        # [ce_sum, gdkd_sum, gdkd_n, rcka_sum, rcka_n, gate_sum, gate_positions, bad_gdkd, bad_rcka]
        stats = [0.0] * 9

        for b in micro:
            b = _to_device(b, acc.device)
            labels, inputs = b["labels"], _model_inputs(b)
            with acc.accumulate(model):
                cap = LayerCapture(s_layer) if s_layer is not None else contextlib.nullcontext()
                with cap:
                    logits = model(**inputs, use_cache=False).logits
                hs = cap.pop() if s_layer is not None else None
                ce_sum = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                         labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
                loss = ce_sum * ce_scale
                stats[0] += float(ce_sum.detach())
                if teacher is not None:
                    tcap = LayerCapture(t_layer) if t_layer is not None else contextlib.nullcontext()
                    with torch.no_grad(), acc.autocast(), tcap:
                        t_logits = teacher(**inputs, use_cache=False).logits
                    if t_logits.shape != logits.shape:
                        raise GraceError(f"teacher logits {tuple(t_logits.shape)} do not match the student's "
                                         f"{tuple(logits.shape)} on the same batch")
                    res = gdkd(logits, t_logits, labels, temperature=cfg.temperature, alpha=cfg.alpha,
                               beta_dkd=cfg.beta_dkd, chunk_size=cfg.gdkd_chunk_size)
                    if res.n_positions:
                        value = float(res.loss.detach())
                        if math.isfinite(value):
                            loss = loss + (beta * s_dkd) * res.loss
                            stats[1] += value
                            stats[2] += 1
                            stats[5] += float(res.gate_mean) * res.n_positions
                            stats[6] += res.n_positions
                        else:
                            stats[7] += 1
                    if t_layer is not None:
                        r = rcka(hs, tcap.pop(), inputs["input_ids"] == image_id, min_tokens=cfg.rcka_min_tokens)
                        if r.n_images:
                            value = float(r.loss.detach())
                            if math.isfinite(value):
                                loss = loss + (cfg.omega * s_rcka) * r.loss
                                stats[3] += value
                                stats[4] += 1
                            else:
                                stats[8] += 1
                acc.backward(loss)

        tot = acc.reduce(torch.tensor(stats, dtype=torch.float64, device=acc.device), reduction="sum").tolist()
        ce = tot[0] / max(n_global, 1)
        if not math.isfinite(ce):
            raise GraceError(f"non-finite cross-entropy ({ce}) at optimizer step {k + 1}: the student or a batch "
                             f"is broken (check the learning rate, the data and the model dtype)")
        grad_norm = None
        if cfg.max_grad_norm:
            gn = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            grad_norm = float(gn) if gn is not None else None
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        gdkd_mean = tot[1] / tot[2] if tot[2] else None
        if controller is not None:
            controller.update(gdkd_mean if gdkd_mean is not None else math.nan)
        record = {
            "step": k + 1, "ce": ce, "gdkd": gdkd_mean, "rcka": tot[3] / tot[4] if tot[4] else None,
            "beta": beta, "beta_next": controller.beta if controller is not None else None,
            "gate": tot[5] / tot[6] if tot[6] else None, "lr": lr, "s_dkd": s_dkd if teacher is not None else None,
            "s_rcka": s_rcka if t_layer is not None else None, "grad_norm": grad_norm, "tokens": n_global,
            "nonfinite_gdkd": int(tot[7]), "nonfinite_rcka": int(tot[8]), "sec": time.perf_counter() - t0,
        }
        if acc.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        bar.update(1)
        bar.set_postfix({key: f"{record[key]:.4g}" for key in ("ce", "gdkd", "rcka", "beta", "gate", "lr")
                         if record[key] is not None}, refresh=False)
        if cfg.save_every and (k + 1) % cfg.save_every == 0:
            _save_checkpoint(acc, out, k + 1, cfg, scheduler, controller, skipped, global_batch, len(dataset),
                             total, steps_per_epoch)
        if on_step is not None:
            on_step(record)
    bar.close()
    del batches

    # -- the bad-record summary and the final model --------------------------------------------
    all_skipped = SkipReport()
    all_skipped.extend(gather_object(skipped.items()))
    base = getattr(dataset, "report", None)
    if isinstance(base, SkipReport):
        all_skipped.extend((("file", k), r, rid) for k, r, rid in base.items())
    if all_skipped.total:
        acc.print(f"data: {all_skipped.summary()}")

    unwrapped = _full_student(acc, model, skeleton)  # None on ranks other than the main one when sharded
    model_dir = None
    if cfg.save_final:
        if cfg.quantized and unwrapped is not None:
            bake(unwrapped)
        model_dir = out / MODEL_DIR
        if acc.is_main_process:
            save_fn(unwrapped, tokenizer, processor, model_dir, layout=cfg.save_layout, family=_family(unwrapped))
            if cfg.pack:
                packed_dir = _pack_final(model_dir, cfg)
                acc.print(f"packed W{cfg.bits}G{cfg.group_size} checkpoint: {packed_dir}")
        acc.wait_for_everyone()
    return TrainResult(output_dir=out, model_dir=model_dir, steps=total,
                       beta=controller.beta if controller is not None else None, last=record,
                       skipped=all_skipped.counts(), log_path=log_path, model=unwrapped)


def _shards_parameters(acc) -> bool:
    """Whether the engine splits parameters across ranks (FSDP, DeepSpeed), so no rank has them all."""
    from accelerate.utils import DistributedType

    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def meta_skeleton(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters live on the meta device (no memory), buffers real.

    Taken before a sharding engine rewrites the module; :func:`fill_skeleton` later loads the
    gathered full state dict into it. Parameters shared between submodules stay shared.
    """
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in module.parameters()}
    skeleton = copy.deepcopy(module, memo)
    for m in skeleton.modules():  # the gathered state arrives on the CPU: keep the buffers beside it
        for name, buf in m._buffers.items():
            if buf is not None:
                m._buffers[name] = buf.cpu()
    return skeleton


def fill_skeleton(skeleton: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a full state dict into a :func:`meta_skeleton` (by assignment), re-tying shared weights."""
    missing, unexpected = skeleton.load_state_dict(state, strict=False, assign=True)
    tied = getattr(skeleton, "tie_weights", None)
    if tied is not None:
        tied()
    still_meta = [n for n, p in skeleton.named_parameters() if p.is_meta]
    if still_meta or unexpected:
        raise GraceError(f"gathering the trained student: parameters not in the gathered state dict {still_meta[:5]}"
                         f", unexpected keys {list(unexpected)[:5]} ({len(missing)} missing in all)")
    return skeleton


def _full_student(acc, model, skeleton: nn.Module | None) -> nn.Module | None:
    """The trained student as one ordinary module: unwrapped (DDP, one process) or gathered (sharded).

    Sharded: every rank takes part in the gather (a collective); only the main rank gets a module.
    """
    if skeleton is None:
        return acc.unwrap_model(model)
    state = acc.get_state_dict(model, unwrap=True)
    if not acc.is_main_process:
        return None
    return fill_skeleton(skeleton, {k: v.detach().cpu() for k, v in state.items()})


def _pack_final(model_dir: Path, cfg: TrainConfig) -> Path:
    """``grace pack`` the final QAT checkpoint into ``<model_dir>-packed`` (verified bit-exactly)."""
    from grace.formats.pack_dir import pack_checkpoint

    dst = model_dir.parent / f"{model_dir.name}-packed"
    if dst.exists():  # a rerun of a finished run: replace the stale packed copy
        import shutil

        shutil.rmtree(dst)
    pack_checkpoint(model_dir, dst, bits=cfg.bits, progress=cfg.progress)
    return dst


def _save_checkpoint(acc, out, step, cfg, scheduler, controller, skipped, global_batch, n, total, spe):
    """Write ``step-N`` atomically: accelerate's state into a temporary directory, then our JSON, then rename."""
    from accelerate.utils import gather_object

    tmp = ckpt.tmp_dir_for(out, step)
    if acc.is_main_process and tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(output_dir=str(tmp))
    every_skip = SkipReport()
    every_skip.extend(gather_object(skipped.items()))
    if acc.is_main_process:
        sched = scheduler.state_dict()  # counters and base LRs only: JSON-safe
        ckpt.write_state(tmp, {
            "step": step, "epoch": step // spe, "samples_seen": step * global_batch, "global_batch": global_batch,
            "dataset_size": n, "total_steps": total, "mode": cfg.mode,
            "controller": controller.state_dict() if controller is not None else None,
            "scheduler": sched, "skipped": [list(item) for item in every_skip.items()],
            "config": cfg.to_dict(),
        })
        ckpt.finalize(tmp, out, step)
        ckpt.prune(out, cfg.keep_checkpoints)
    acc.wait_for_everyone()
