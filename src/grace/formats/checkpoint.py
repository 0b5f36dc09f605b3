"""A checkpoint directory as files: config, weight files, tensor index, and what form it is in.

Reads only safetensors *headers* (names, dtypes, shapes) until a tensor is asked for, so it
works on 7B checkpoints in bounded memory. It knows nothing about model classes: family and
layout are read from config.json fields (FORMATS.md §4-6), the form from which marker files
exist:

* ``packed``: ``awq_quantized_modules.json`` (grace / published GRACE AWQ builds)
* ``qat``:    a sidecar ``qat_quantized_weights.{safetensors,bin}``
* ``compressed-tensors`` / ``awq-hf``: a standard ``quantization_config`` in config.json
* ``dense``:  none of the above
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from grace.formats.metadata import METADATA_FILE, FormatError
from grace.formats.qat_sidecar import SIDECAR_BIN, SIDECAR_SAFETENSORS
from grace.formats.safetensors import DTYPE_NAMES, DTYPES, SafetensorsFile

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


@dataclass
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * DTYPES[self.dtype].itemsize


@dataclass
class CheckpointDir:
    path: Path
    config: dict = field(default_factory=dict)
    weight_files: list[Path] = field(default_factory=list)
    _index: dict[str, TensorInfo] | None = None
    _files: dict[Path, SafetensorsFile] = field(default_factory=dict)  # parsed headers, one per file

    @classmethod
    def open(cls, path: str | Path) -> CheckpointDir:
        p = Path(path)
        if not p.is_dir():
            raise FormatError(f"{p}: not a directory")
        cfg_path = p / "config.json"
        if not cfg_path.is_file():
            raise FormatError(f"{p}: no config.json (not a model checkpoint directory)")
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise FormatError(f"{cfg_path}: not valid JSON ({e})") from None
        return cls(p, config, _find_weight_files(p))

    # ---- what it is -------------------------------------------------------------------
    @property
    def family(self) -> str:
        c = self.config
        mt = str(c.get("model_type", ""))
        if "mm_vision_tower" in c or mt in ("llava", "llava_llama"):
            return "llava"
        if mt.startswith("qwen3_vl") or mt.startswith("qwen2_5_vl") or mt.startswith("qwen2_vl"):
            return "qwen3vl"
        if mt in ("llama", "mistral", "qwen2", "qwen3"):
            return "text"
        raise FormatError(f"{self.path / 'config.json'}: unknown model_type {mt!r} (expected llava or qwen3_vl)")

    @property
    def layout(self) -> str:
        """``original`` (haotian-liu/LLaVA keys and config) or ``hf`` (transformers)."""
        return "original" if "mm_vision_tower" in self.config else "hf"

    @property
    def form(self) -> str:
        if (self.path / METADATA_FILE).is_file():
            return "packed"
        if (self.path / SIDECAR_SAFETENSORS).is_file() or (self.path / SIDECAR_BIN).is_file():
            return "qat"
        qc = self.config.get("quantization_config") or self.config.get("text_config", {}).get("quantization_config")
        if qc:
            method = qc.get("quant_method", "")
            return "compressed-tensors" if method == "compressed-tensors" else f"{method}-hf"
        return "dense"

    # ---- tensors ----------------------------------------------------------------------
    def index(self) -> dict[str, TensorInfo]:
        if self._index is None:
            idx: dict[str, TensorInfo] = {}
            for f in self.weight_files:
                for name, info in read_header(self._file(f)).items():
                    if name in idx:
                        raise FormatError(f"{f}: tensor {name!r} also appears in {idx[name].file.name}")
                    idx[name] = info
            self._index = idx
        return self._index

    def get(self, name: str) -> torch.Tensor:
        info = self.index().get(name)
        if info is None:
            raise FormatError(f"{self.path}: tensor {name!r} not found in the weight files")
        return self._file(info.file).read(name)

    def _file(self, path: Path) -> SafetensorsFile:
        if path not in self._files:
            self._files[path] = SafetensorsFile(path)
        return self._files[path]

    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.index().values())


def _find_weight_files(p: Path) -> list[Path]:
    idx = p / INDEX_FILE
    if idx.is_file():
        try:
            wm = json.loads(idx.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise FormatError(f"{idx}: malformed index ({e})") from None
        files = sorted({p / v for v in wm.values()})
        for f in files:
            if not f.is_file():
                raise FormatError(f"{idx}: names {f.name}, which does not exist")
        return files
    if (p / SINGLE_FILE).is_file():
        return [p / SINGLE_FILE]
    files = sorted(f for f in p.glob("*.safetensors") if not f.name.startswith("qat_quantized_weights"))
    if files:
        return files
    if list(p.glob("*.bin")) and not (p / SIDECAR_BIN).is_file():
        raise FormatError(f"{p}: only pickled .bin weights found; convert them to safetensors first "
                          "(grace reads model weights from safetensors only)")
    raise FormatError(f"{p}: no model weights (model.safetensors or a sharded index)")


def read_header(path: Path | SafetensorsFile) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of a safetensors file (a path or an opened one), from its validated header."""
    f = path if isinstance(path, SafetensorsFile) else SafetensorsFile(path)
    return {name: TensorInfo(f.path, DTYPE_NAMES[i.dtype], i.shape) for name, i in f.infos.items()}
