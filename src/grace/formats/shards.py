"""Streaming safetensors output shared by every writer (``grace pack``, ``grace export``).

Invariant: a writer never holds more than one shard (about ``shard_bytes``) of tensors; shards
are written under temporary names and renamed at :meth:`ShardWriter.finish` to the standard
``model.safetensors`` (one shard) or ``model-0000i-of-0000n.safetensors`` + index (several), the
names transformers, vLLM and grace all read. Metadata ``{"format": "pt"}`` as transformers writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from grace.formats.checkpoint import INDEX_FILE, SINGLE_FILE


class ShardWriter:
    """Collects tensors and flushes them to safetensors shards of about ``shard_bytes``.

        w = ShardWriter(out_dir, 2 << 30); w.add("a.weight", t); ...; w.finish()
    """

    def __init__(self, out_dir: Path, shard_bytes: int):
        self.out_dir, self.shard_bytes = Path(out_dir), shard_bytes
        self.buf: dict[str, torch.Tensor] = {}
        self.buf_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total = 0
        self._seen: set[str] = set()

    def add(self, name: str, t: torch.Tensor) -> None:
        if name in self._seen:  # a writer bug, not a user error: two tensors for one key
            raise ValueError(f"tensor {name!r} written twice")
        self._seen.add(name)
        t = t.contiguous()
        self.buf[name] = t
        n = t.numel() * t.element_size()
        self.buf_bytes += n
        self.total += n
        if self.buf_bytes >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        p = self.out_dir / f"shard-{len(self.shards):05d}.tmp.safetensors"
        save_file(self.buf, str(p), metadata={"format": "pt"})
        self.shards.append((p, list(self.buf)))
        self.buf, self.buf_bytes = {}, 0

    def finish(self) -> None:
        self.flush()
        if len(self.shards) == 1:
            self.shards[0][0].rename(self.out_dir / SINGLE_FILE)
            return
        n = len(self.shards)
        weight_map = {}
        for i, (p, names) in enumerate(self.shards):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            p.rename(self.out_dir / final)
            weight_map.update({k: final for k in names})
        (self.out_dir / INDEX_FILE).write_text(
            json.dumps({"metadata": {"total_size": self.total}, "weight_map": weight_map}, indent=2)
        )


class ProgressBar:
    """A rich progress bar that can be switched off (tests, library use)."""

    def __init__(self, enabled: bool, total: int, label: str = "packing"):
        self._p = None
        if enabled:
            from rich.progress import Progress

            self._p = Progress(transient=True)
            self._p.start()
            self._task = self._p.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        if self._p:
            self._p.advance(self._task, n)

    def close(self) -> None:
        if self._p:
            self._p.stop()
