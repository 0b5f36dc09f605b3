"""Frozen quantization configs and their presets.

A :class:`QuantSpec` says *how* to quantize (bits, group size, scale dtype) and *what* to
quantize (regex ``targets`` / ``ignore`` patterns matched against dotted module names with
``re.fullmatch``). It is validated on creation and saved as JSON (with a version field) next to
every checkpoint we write, so a mode is never parsed back out of a file name.

    spec = QuantSpec(bits=4, group_size=128)        # == W4G128
    spec = W4G128.replace(bits=3)                   # lower bit-widths for experiments
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from grace.errors import GraceError

SPEC_VERSION = 1

# Default targets: every decoder layer's attention and MLP projections of the *language model*.
# The patterns are written to match both the transformers layouts
# (``model.language_model.layers.N...``) and the original LLaVA layout (``model.layers.N...``).
DEFAULT_TARGETS: tuple[str, ...] = (
    r"(.*\.)?layers\.\d+\.self_attn\.(q|k|v|o)_proj",
    r"(.*\.)?layers\.\d+\.mlp\.(gate|up|down)_proj",
)
# Never quantized, even if a target pattern matches: vision towers, projector / merger,
# embeddings and the output head (GRACE.md §2).
DEFAULT_IGNORE: tuple[str, ...] = (
    r".*vision_tower.*",
    r".*visual.*",
    r".*multi_modal_projector.*",
    r".*mm_projector.*",
    r".*merger.*",
    r".*embed_tokens.*",
    r".*lm_head.*",
)


class SpecError(GraceError, ValueError):
    """An invalid quantization spec (bad bits, group size, or patterns)."""


@dataclass(frozen=True)
class QuantSpec:
    """How and what to quantize.

    bits:        code width; 4 and 8 are the deployable widths (packed formats and kernels),
                 2 and 3 are accepted for fake-quant / RTN experiments only.
    group_size:  input elements sharing one scale; if it does not divide a layer's
                 ``in_features`` that layer uses one row-wide group (recorded in metadata).
    scale_dtype: dtype the scale is rounded to in the fake-quant forward ("float16" so training
                 sees exactly the deployed fp16 scales; "float32" to follow the reference code).
    targets / ignore: regexes (``re.fullmatch``) over dotted module names.
    """

    bits: int = 4
    group_size: int = 128
    scale_dtype: str = "float16"
    targets: tuple[str, ...] = DEFAULT_TARGETS
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    version: int = field(default=SPEC_VERSION)

    def __post_init__(self) -> None:
        if self.bits not in (2, 3, 4, 8):
            raise SpecError(f"bits must be one of 2, 3, 4, 8 (4 and 8 deployable); got {self.bits}")
        if not isinstance(self.group_size, int) or self.group_size <= 0:
            raise SpecError(f"group_size must be a positive int; got {self.group_size!r}")
        if self.scale_dtype not in ("float16", "float32"):
            raise SpecError(f"scale_dtype must be 'float16' or 'float32'; got {self.scale_dtype!r}")
        # Tuples (not lists) keep the dataclass hashable and truly frozen.
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        for pat in (*self.targets, *self.ignore):
            try:
                re.compile(pat)
            except re.error as e:
                raise SpecError(f"invalid module pattern {pat!r}: {e}") from e

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def name(self) -> str:
        return f"W{self.bits}G{self.group_size}"

    def matches(self, module_name: str) -> bool:
        """True if ``module_name`` is a target and not ignored."""
        if any(re.fullmatch(p, module_name) for p in self.ignore):
            return False
        return any(re.fullmatch(p, module_name) for p in self.targets)

    def replace(self, **changes: Any) -> QuantSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        d["ignore"] = list(self.ignore)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"unknown QuantSpec fields: {sorted(unknown)}")
        version = d.get("version", SPEC_VERSION)
        if version > SPEC_VERSION:
            raise SpecError(f"QuantSpec version {version} is newer than this grace ({SPEC_VERSION})")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> QuantSpec:
        return cls.from_dict(json.loads(text))


W4G128 = QuantSpec(bits=4, group_size=128)
W8G128 = QuantSpec(bits=8, group_size=128)
PRESETS: dict[str, QuantSpec] = {"W4G128": W4G128, "W8G128": W8G128}


def preset(name: str) -> QuantSpec:
    """Look up a preset by name ("W4G128", "W8G128"); also accepts "W{b}G{g}" generally."""
    if name in PRESETS:
        return PRESETS[name]
    m = re.fullmatch(r"W(\d+)G(\d+)", name.upper())
    if not m:
        raise SpecError(f"unknown quantization preset {name!r}; expected e.g. W4G128 or W8G128")
    return QuantSpec(bits=int(m.group(1)), group_size=int(m.group(2)))
