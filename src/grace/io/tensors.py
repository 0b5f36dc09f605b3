"""A checkpoint directory's weight tensors for the loader, across shards and file kinds.

The safetensors codec itself is :mod:`grace.formats.safetensors` (one tensor at a time, bounded
memory). Checkpoint weight files: ``model.safetensors``, sharded ``*.safetensors`` + index, or (older
LLaVA releases) ``pytorch_model*.bin`` read with ``torch.load(weights_only=True, mmap=True)``.
The QAT sidecar files are never treated as model weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from grace.formats.metadata import FormatError
from grace.formats.qat_sidecar import SIDECAR_BIN, SIDECAR_SAFETENSORS, read_bin
from grace.formats.safetensors import SafetensorsFile

__all__ = ["WeightSource"]


class WeightSource:
    """All weight tensors of a checkpoint directory, across shards and file kinds."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.files: list[Path] = []
        idx = self.dir / "model.safetensors.index.json"
        bin_idx = self.dir / "pytorch_model.bin.index.json"
        if idx.is_file():
            self.files = self._from_index(idx)
        elif (self.dir / "model.safetensors").is_file():
            self.files = [self.dir / "model.safetensors"]
        else:
            st = sorted(p for p in self.dir.glob("*.safetensors") if p.name != SIDECAR_SAFETENSORS)
            if st:
                self.files = st
            elif bin_idx.is_file():
                self.files = self._from_index(bin_idx)
            else:
                self.files = sorted(p for p in self.dir.glob("pytorch_model*.bin") if p.name != SIDECAR_BIN)
        if not self.files:
            raise FormatError(f"{self.dir}: no weight files (model.safetensors, *.safetensors or pytorch_model*.bin)")
        self._st = {p: SafetensorsFile(p) for p in self.files if p.suffix == ".safetensors"}
        self._bin_keys: dict[Path, list[str]] = {}

    def _from_index(self, idx: Path) -> list[Path]:
        try:
            wm = json.loads(idx.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise FormatError(f"{idx}: not a valid index file ({e})") from None
        files = []
        for fn in dict.fromkeys(wm.values()):
            p = self.dir / fn
            if not p.is_file():
                raise FormatError(f"{idx}: lists shard {fn!r}, which is missing")
            files.append(p)
        return files

    def keys(self) -> dict[str, Path]:
        """``{tensor name: file}`` (reads .bin files lazily with mmap to list their keys)."""
        out: dict[str, Path] = {}
        for p in self.files:
            if p in self._st:
                names = self._st[p].keys()
            else:
                names = list(self._load_bin(p))
            for n in names:
                out[n] = p
        return out

    def shape(self, name: str, path: Path) -> tuple[int, ...]:
        if path in self._st:
            return self._st[path].infos[name].shape
        return tuple(self._load_bin(path)[name].shape)

    def _load_bin(self, p: Path) -> dict[str, torch.Tensor]:
        # mmap=True: tensors stay on disk until touched, like the safetensors path.
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - read_bin gives the clear, safe error
            obj = read_bin(p)
        if not isinstance(obj, dict):
            raise FormatError(f"{p}: expected a dict of tensors")
        return obj

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor, Path]]:
        for p in self.files:
            if p in self._st:
                for n, t in self._st[p].iter_tensors():
                    yield n, t, p
            else:
                sd = self._load_bin(p)
                for n in list(sd):
                    yield n, sd.pop(n), p
                del sd

    def total_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in self.files)
