"""The one training config: a flat dataclass, loaded from a YAML recipe, overridden by ``--set``.

    cfg = TrainConfig.from_yaml("recipes/grace_w4.yaml", overrides=["lr=1e-5", "max_steps=100"])

Every knob of GRACE.md §6 is a field whose default is the paper's Table 6 value, so a recipe only
names what it changes. Flat (no nesting) so that ``--set key=value`` addresses any knob and a
run's ``config.json`` reads as one list. Values of ``--set`` are parsed as YAML scalars or lists
(``lr=2e-5``, ``data=[a.json%50, b.json]``). Unknown keys and wrong types are refused with the
key (and the recipe file) named, because a silently ignored typo in a recipe costs a whole run.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from grace.config import QuantSpec
from grace.errors import GraceError

__all__ = ["TrainConfig", "ConfigError", "MODES", "DEFAULT_FREEZE"]

# mode -> (fake-quantize the student, distil from a teacher with GDKD, add RCKA)
MODES: dict[str, tuple[bool, bool, bool]] = {
    "sft": (False, False, False),
    "qat": (True, False, False),
    "kd": (False, True, False),
    "grace": (True, True, True),
}

# The vision encoder stays frozen (as in LLaVA-1.5 stage-2 fine-tuning); the projector / merger,
# including Qwen3-VL's deepstack mergers, and the language model train. Patterns, not classes:
# per-family knowledge is data.
DEFAULT_FREEZE: tuple[str, ...] = (
    r"(.*\.)?vision_tower\..*",
    r"(.*\.)?visual\.(patch_embed|pos_embed|blocks)\..*",
)


class ConfigError(GraceError, ValueError):
    """A recipe or override that does not describe a valid training run."""


@dataclass
class TrainConfig:
    """All knobs of a GRACE / QAT / KD / SFT run (see ``recipes/*.yaml`` for commented examples)."""

    mode: str = "grace"  # sft | qat | kd | grace (GRACE.md §7)

    # Inputs (used by the CLI; the Python API also accepts ready-built models and datasets).
    student: str | None = None
    teacher: str | None = None
    data: list[str] = field(default_factory=list)  # annotation files, "FILE%NN" keeps NN percent
    image_root: str | None = None
    max_length: int = 2048  # longer records are skipped (and counted)
    output_dir: str = "runs/grace"

    # Quantization (GRACE.md §2).
    bits: int = 4
    group_size: int = 128
    scale_dtype: str = "float16"

    # Distillation (GRACE.md §3-6; defaults are Table 6).
    temperature: float = 2.0
    alpha: float = 1.0  # TCKD weight
    beta_dkd: float = 4.0  # NCKD weight
    omega: float = 3.0  # RCKA weight
    rcka_layer: int = -2  # hidden-state index: -2 = output of the penultimate decoder layer
    rcka_min_tokens: int = 4
    ib_tau: float = 3.0
    ib_eta: float = 0.003
    beta_init: float = 0.5
    beta_min: float = 0.1
    beta_max: float = 1.0
    ib_ema_decay: float = 0.99
    dkd_warmup_steps: int = 0  # not in Table 6: GDKD at full weight from the first step
    rcka_warmup_steps: int = 400
    gdkd_chunk_size: int | None = None  # supervised positions per chunk (None: ~32M logits per chunk)
    image_token_id: int | None = None  # None: read from the student's config

    # Optimisation.
    lr: float = 2e-5
    scale_lr: float | None = None  # learning rate of the LSQ log-scales (None: lr)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    lr_schedule: str = "cosine"  # cosine | linear | constant (after a linear warm-up)
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None  # overrides warmup_ratio
    min_lr_ratio: float = 0.0
    micro_batch_size: int = 4  # per process; effective batch = micro * grad_accum * processes
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None  # caps the optimizer steps (None: epochs * steps per epoch)
    freeze: list[str] = field(default_factory=lambda: list(DEFAULT_FREEZE))

    # Engine.
    mixed_precision: str = "auto"  # auto (bf16 on a bf16-capable GPU, else fp32) | no | bf16 | fp16
    seed: int = 42
    num_workers: int = 0
    gradient_checkpointing: bool = False
    find_unused_parameters: bool = False

    # Bookkeeping.
    save_every: int = 500  # optimizer steps between checkpoints (0: only the final model)
    keep_checkpoints: int = 2
    progress: bool = True
    save_final: bool = True
    save_layout: str = "hf"  # passed to the checkpoint writer
    pack: bool = False  # after saving a W4/W8 QAT student, also write <model>-packed (grace pack)

    def __post_init__(self) -> None:
        self.validate()

    # -- derived views -------------------------------------------------------------------------
    @property
    def quantized(self) -> bool:
        return MODES[self.mode][0]

    @property
    def distill(self) -> bool:
        return MODES[self.mode][1]

    @property
    def use_rcka(self) -> bool:
        return MODES[self.mode][2]

    def quant_spec(self) -> QuantSpec:
        return QuantSpec(bits=self.bits, group_size=self.group_size, scale_dtype=self.scale_dtype)

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is not one of {sorted(MODES)}")
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"lr_schedule: {self.lr_schedule!r} is not one of cosine, linear, constant")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision: {self.mixed_precision!r} is not one of auto, no, bf16, fp16")
        for name in ("micro_batch_size", "grad_accum", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1; got {getattr(self, name)}")
        for name in ("save_every", "dkd_warmup_steps", "rcka_warmup_steps", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0; got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: must be >= 1; got {self.max_steps}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature: must be > 0; got {self.temperature}")
        if self.beta_min > self.beta_max:
            raise ConfigError(f"beta_min ({self.beta_min}) exceeds beta_max ({self.beta_max})")
        if not 0.0 <= self.ib_ema_decay < 1.0:
            raise ConfigError(f"ib_ema_decay: must be in [0, 1); got {self.ib_ema_decay}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"warmup_ratio: must be in [0, 1]; got {self.warmup_ratio}")
        if self.quantized:
            try:
                self.quant_spec()
            except GraceError as e:
                raise ConfigError(f"bits / group_size / scale_dtype: {e}") from None
        if self.pack and not (self.quantized and self.bits in (4, 8) and self.save_final):
            raise ConfigError(f"pack: needs a quantized mode (qat/grace) with bits 4 or 8 and save_final; "
                              f"got mode={self.mode}, bits={self.bits}")

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping, coercing YAML scalars to each field's type; unknown keys refused."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of knob: value, got {type(d).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; see grace.train.TrainConfig for the knobs")
        kwargs = {k: _coerce(v, hints[k], f"{source}: {k}") for k, v in d.items()}
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read a recipe and apply ``key=value`` overrides (values parsed as YAML)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: recipe not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a recipe is a mapping of knob: value")
        data = dict(data)
        data.update(parse_overrides(overrides or []))
        return cls.from_dict(data, source=str(p))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-5", "data=[a.json, b.json%10]"]`` -> ``{"lr": 1e-5, "data": [...]}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from None
    return out


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check / convert ``value`` against a simple type hint (int, float, str, bool, list[str], X | None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(hint)
        return [_coerce(v, inner, where) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):  # YAML reads "2e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare `no` (mixed_precision: no) as false
            return "no" if not value else "yes"
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value
