"""The safetensors format, read and written one tensor at a time (grace's one safetensors codec).

Why our own reader: ``safetensors.safe_open`` memory-maps the file, and every page touched
while loading stays mapped (and counted in RSS) until the file is closed, so loading a packed
model that way peaks near twice its size. Here each tensor is read with ``readinto`` straight
into its final buffer: peak memory stays at the loaded tensors plus one tensor in flight.
The header is validated up front (dtype, shape, offsets inside the file), so a corrupt file is
reported with its name and the tensor at fault instead of a crash later.

    f = SafetensorsFile("model.safetensors"); f.infos["lm_head.weight"].shape; f.read("lm_head.weight")
    write_sharded(out_dir, tensors, max_shard_bytes=5 << 30)   # model.safetensors or shards + index
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from grace.formats.metadata import FormatError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute file offset
    end: int


class SafetensorsFile:
    """An open safetensors file: ``infos`` from the header; ``read(name)`` one tensor at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise FormatError(f"{self.path}: corrupt safetensors header (file shorter than 8 bytes)")
                (n,) = struct.unpack("<Q", head)
                if n > min(_MAX_HEADER, size - 8):
                    raise FormatError(f"{self.path}: corrupt safetensors header (header length {n} exceeds file)")
                raw = f.read(n)
        except OSError as e:
            raise FormatError(f"{self.path}: cannot read ({e.strerror})") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"{self.path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise FormatError(f"{self.path}: corrupt safetensors header (not a JSON object)")
        self.metadata = header.pop("__metadata__", None) or {}
        base = 8 + n
        self.infos: dict[str, TensorInfo] = {}
        for name, d in header.items():
            try:
                dt = DTYPES[d["dtype"]]
                shape = tuple(int(x) for x in d["shape"])
                a, b = (int(x) for x in d["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise FormatError(f"{self.path}: tensor {name!r}: bad header entry {d!r}") from None
            numel = 1
            for s in shape:
                numel *= s
            if b - a != numel * dt.itemsize or a < 0 or base + b > size:
                raise FormatError(
                    f"{self.path}: tensor {name!r}: data offsets {a}..{b} do not match shape {list(shape)} "
                    f"{d['dtype']} or run past the end of the file ({size} bytes)"
                )
            self.infos[name] = TensorInfo(name, dt, shape, base + a, base + b)

    def keys(self) -> list[str]:
        return list(self.infos)

    def read(self, name: str, fh=None) -> torch.Tensor:
        """Read one tensor into a fresh (non-mmapped) CPU tensor."""
        info = self.infos[name]
        t = torch.empty(info.shape, dtype=info.dtype)
        if t.numel() == 0:
            return t
        buf = t.view(-1).view(torch.uint8).numpy()
        own = fh is None
        f = open(self.path, "rb") if own else fh
        try:
            f.seek(info.start)
            got = f.readinto(memoryview(buf))
        finally:
            if own:
                f.close()
        if got != info.end - info.start:
            raise FormatError(f"{self.path}: tensor {name!r}: file truncated")
        return t

    def iter_tensors(self, names=None) -> Iterator[tuple[str, torch.Tensor]]:
        with open(self.path, "rb") as fh:
            for name in names if names is not None else self.infos:
                yield name, self.read(name, fh)


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> int:
    """Write ``tensors`` in safetensors format, streaming one tensor at a time; returns bytes written."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    order = list(tensors)
    for name in order:
        t = tensors[name]
        if t.dtype not in DTYPE_NAMES:
            raise FormatError(f"{path}: tensor {name!r} has unsupported dtype {t.dtype}")
        nb = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + nb]}
        off += nb
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name in order:
            t = tensors[name].detach()
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.contiguous()
            if t.numel():
                f.write(memoryview(t.view(-1).view(torch.uint8).numpy()))
    return 8 + len(hb) + off


def write_sharded(directory: str | Path, tensors: dict[str, torch.Tensor], *, max_shard_bytes: int = 5 << 30,
                  prefix: str = "model") -> list[str]:
    """``model.safetensors`` or ``model-0000k-of-0000n.safetensors`` + index; returns the file names."""
    d = Path(directory)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, t in tensors.items():
        nb = t.numel() * t.element_size()
        if shards[-1] and size + nb > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += nb
    if len(shards) == 1:
        write_safetensors(d / f"{prefix}.safetensors", shards[0], {"format": "pt"})
        return [f"{prefix}.safetensors"]
    names, weight_map, total = [], {}, 0
    for i, sh in enumerate(shards):
        fn = f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_safetensors(d / fn, sh, {"format": "pt"})
        names.append(fn)
        weight_map.update({k: fn for k in sh})
    (d / f"{prefix}.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return names
