"""``awq_quantized_modules.json``: which modules of a packed checkpoint are quantized, and how.

Published form (FORMATS.md §1): ``{"bits": 4, "group_size": 128, "modules": [names]}``.
grace adds two optional fields that readers of the published form may ignore:
``"version"`` (``"gemm"`` for W4, ``"int8-rowmajor"`` for W8) and ``"group_size_overrides"``
(``{name: in_features}`` for layers whose in_features the group size does not divide, which
therefore use one row-wide group). config.json gets ``"awq_packing"`` instead of a
``quantization_config`` so that plain transformers does not try an AWQ backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from grace.errors import GraceError
from grace.formats.awq_gemm import PACK_VERSION_W4, PACK_VERSION_W8

METADATA_FILE = "awq_quantized_modules.json"


class FormatError(GraceError, ValueError):
    """A checkpoint file that does not follow its format; the message names file and field."""


@dataclass
class PackedMetadata:
    bits: int
    group_size: int
    modules: list[str]
    group_size_overrides: dict[str, int] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return PACK_VERSION_W4 if self.bits == 4 else PACK_VERSION_W8

    def group_size_of(self, name: str) -> int:
        return self.group_size_overrides.get(name, self.group_size)

    def to_dict(self) -> dict:
        d = {"bits": self.bits, "group_size": self.group_size, "modules": list(self.modules), "version": self.version}
        if self.group_size_overrides:
            d["group_size_overrides"] = dict(self.group_size_overrides)
        return d

    def config_block(self) -> dict:
        """The ``awq_packing`` block written into config.json."""
        return {"bits": self.bits, "group_size": self.group_size, "zero_point": 8 if self.bits == 4 else 0,
                "version": self.version}

    def save(self, directory: str | Path) -> Path:
        p = Path(directory) / METADATA_FILE
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p

    @classmethod
    def load(cls, directory: str | Path) -> PackedMetadata:
        p = Path(directory) / METADATA_FILE
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise FormatError(f"{p}: missing (not a packed checkpoint)") from None
        except json.JSONDecodeError as e:
            raise FormatError(f"{p}: not valid JSON ({e})") from None
        for key in ("bits", "group_size", "modules"):
            if key not in d:
                raise FormatError(f"{p}: field {key!r} is missing")
        if d["bits"] not in (4, 8):
            raise FormatError(f"{p}: field 'bits' must be 4 or 8; got {d['bits']!r}")
        if not isinstance(d["group_size"], int) or d["group_size"] <= 0:
            raise FormatError(f"{p}: field 'group_size' must be a positive int; got {d['group_size']!r}")
        if not isinstance(d["modules"], list) or not all(isinstance(m, str) for m in d["modules"]):
            raise FormatError(f"{p}: field 'modules' must be a list of module names")
        version = d.get("version")
        expected = PACK_VERSION_W4 if d["bits"] == 4 else PACK_VERSION_W8
        if version is not None and version != expected:
            raise FormatError(f"{p}: field 'version' {version!r} does not match bits={d['bits']} ({expected!r})")
        return cls(d["bits"], d["group_size"], list(d["modules"]), dict(d.get("group_size_overrides", {})))
