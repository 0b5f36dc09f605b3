"""LLaVA / ShareGPT4V conversation data for training: sources, sub-sampling, bad records, collation.

    ds = ConversationDataset(["llava_665k.json%50", "sharegpt4v.json"], image_root="data/",
                             encode_fn=encode_fn, max_length=2048)
    loader = DataLoader(ds, batch_size=4, collate_fn=partial(pad_collate, pad_token_id=0))

Invariants, and why:

* **Records** are ``{id, image?, conversations: [{from: human|gpt, value}]}`` (GRACE.md §8), read
  from JSON lists or JSON-lines files. A source ``FILE%NN`` keeps NN percent of that file, a
  subset chosen by a seeded RNG keyed on (seed, file name, NN) and kept in file order, so the same
  recipe always trains on the same records, on every rank.
* **A bad record never stops a run.** Cheap structural faults (no turns, empty turn, unknown
  speaker, nothing to supervise, ``<image>`` without an image or an image without exactly one
  ``<image>``) are found when the files are read and the record is dropped. Faults that need I/O
  or the tokenizer (missing or unreadable image, ``encode_fn`` raising ``ValueError``, too long)
  are found in ``__getitem__``; the item is then *replaced by the next good record* so every
  batch keeps its size (data-parallel ranks must run the same number of steps), and the fault
  travels with the item under ``"_skipped"`` so the training loop can count it once per record
  and print one summary at the end. A malformed file (not JSON) is an error naming the file.
* **Tokenisation is not done here.** ``encode_fn(conversations, image) -> {input_ids, labels,
  [vision tensors]}`` comes from the model family (``grace.models.encode_example`` or the small
  reference encoders below); 1-D sequences, vision tensors with a leading per-image dimension.
* :func:`pad_collate` right-pads every per-token tensor (labels with -100, ids with the pad id,
  masks with 0), builds ``attention_mask`` if missing and concatenates vision tensors along dim 0
  (LLaVA ``pixel_values (n_img, 3, H, W)``, Qwen3-VL patches and ``image_grid_thw``).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from grace.data.templates import IGNORE_INDEX, IMAGE_MARKER
from grace.errors import GraceError

__all__ = [
    "DataError",
    "Source",
    "parse_source",
    "read_records",
    "check_record",
    "SkipReport",
    "ConversationDataset",
    "pad_collate",
]

_SPEAKERS = {"human": 0, "user": 0, "gpt": 1, "assistant": 1}
SEQUENCE_KEYS = ("input_ids", "labels", "attention_mask", "mm_token_type_ids", "token_type_ids")


class DataError(GraceError, ValueError):
    """A training data file that cannot be used at all (unreadable, not JSON, no usable record)."""


# ---------------------------------------------------------------------------------------------
# Sources and records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: Path
    percent: float = 100.0


def parse_source(spec: str | Path) -> Source:
    """``"file.json%25"`` -> ``Source(Path("file.json"), 25.0)``; no suffix keeps 100%."""
    text = str(spec)
    head, sep, tail = text.rpartition("%")
    if sep:
        try:
            pct = float(tail)
        except ValueError:
            return Source(Path(text))
        if not 0.0 < pct <= 100.0:
            raise DataError(f"{text}: sub-sampling percentage must be in (0, 100]; got {tail}")
        return Source(Path(head), pct)
    return Source(Path(text))


def _subsample(n: int, source: Source, seed: int) -> list[int]:
    if source.percent >= 100.0:
        return list(range(n))
    k = int(n * source.percent / 100.0 + 0.5)
    rng = random.Random(f"{seed}:{source.path.name}:{source.percent}")
    return sorted(rng.sample(range(n), k))


def read_records(source: Source, seed: int = 0) -> list[tuple[int, object]]:
    """``[(index_in_file, record)]`` of one source after sub-sampling (records not yet checked)."""
    p = source.path
    if not p.is_file():
        raise DataError(f"{p}: training annotation file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    if p.suffix == ".jsonl":
        records: list[object] = []
        for ln, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append(_BadLine(ln))  # counted as a bad record, not fatal
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(records, list):
            raise DataError(f"{p}: expected a JSON list of records, got {type(records).__name__}")
    return [(i, records[i]) for i in _subsample(len(records), source, seed)]


@dataclass(frozen=True)
class _BadLine:
    line: int


def check_record(rec: object) -> str | None:
    """The structural fault of a record (a short reason) or None; no I/O, no tokenizer."""
    if isinstance(rec, _BadLine):
        return "invalid JSON line"
    if not isinstance(rec, dict):
        return "record is not an object"
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        return "no conversations"
    n_markers = 0
    has_reply = False
    for turn in conv:
        if not isinstance(turn, dict):
            return "turn is not an object"
        who = str(turn.get("from", "")).lower()
        if who not in _SPEAKERS:
            return "unknown speaker"
        value = turn.get("value")
        if not isinstance(value, str) or not value.replace(IMAGE_MARKER, "").strip():
            return "empty turn"
        n_markers += value.count(IMAGE_MARKER)
        has_reply |= _SPEAKERS[who] == 1
    if not has_reply:
        return "no assistant turn"
    image = rec.get("image")
    if image is not None and not isinstance(image, str):
        return "image is not a single path"
    if image and n_markers != 1:
        return "image without exactly one <image>" if n_markers else "image without <image>"
    if not image and n_markers:
        return "<image> without an image"
    return None


# ---------------------------------------------------------------------------------------------
# Skip accounting
# ---------------------------------------------------------------------------------------------


@dataclass
class SkipReport:
    """Bad records by reason, each record counted once (keyed by its dataset/file position)."""

    seen: dict[object, str] = field(default_factory=dict)  # key -> reason
    ids: dict[object, str] = field(default_factory=dict)  # key -> record id

    def add(self, key: object, reason: str, record_id: str) -> None:
        if key not in self.seen:
            self.seen[key] = reason
            self.ids[key] = record_id

    def extend(self, items) -> None:
        for key, reason, rid in items:
            self.add(key, reason, rid)

    def items(self) -> list[tuple[object, str, str]]:
        """``[(key, reason, record_id)]``: what :meth:`extend` takes (to merge reports across ranks)."""
        return [(k, r, self.ids.get(k, "")) for k, r in self.seen.items()]

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.seen.values()))

    @property
    def total(self) -> int:
        return len(self.seen)

    def summary(self) -> str:
        if not self.seen:
            return "no bad records"
        examples: dict[str, list[str]] = {}
        for key, reason in self.seen.items():
            ex = examples.setdefault(reason, [])
            if len(ex) < 3 and self.ids.get(key):
                ex.append(self.ids[key])
        parts = [f"{n} {reason}" + (f" (e.g. {', '.join(examples[reason])})" if examples[reason] else "")
                 for reason, n in sorted(self.counts().items(), key=lambda kv: -kv[1])]
        return f"skipped {self.total} bad records: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


def _open_image(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        # Convert ourselves: transformers 5 alpha-composites onto white, the original code did not.
        return im.convert("RGB")


class ConversationDataset(torch.utils.data.Dataset):
    """Map-style dataset of encoded conversations; see the module docstring for the rules."""

    def __init__(self, sources: str | Path | Sequence[str | Path], *, encode_fn: Callable[..., dict],
                 image_root: str | Path | None = None, max_length: int | None = None, seed: int = 0,
                 max_substitutions: int = 1000, load_image: Callable[[Path], object] = _open_image):
        if isinstance(sources, str | Path):
            sources = [sources]
        self.sources = [parse_source(s) for s in sources]
        self.encode_fn = encode_fn
        self.image_root = Path(image_root) if image_root is not None else None
        self.max_length = max_length
        self.max_substitutions = max_substitutions
        self.load_image = load_image
        self.report = SkipReport()  # structural faults found while reading
        self._records: list[tuple[str, dict]] = []  # (record id, record)
        self._bad: dict[int, str] = {}  # lazily found faults, per process
        for si, src in enumerate(self.sources):
            for fi, rec in read_records(src, seed):
                rid = str(rec.get("id", f"{src.path.name}:{fi}")) if isinstance(rec, dict) else f"{src.path.name}:{fi}"
                reason = check_record(rec)
                if reason is not None:
                    self.report.add((si, fi), reason, rid)
                else:
                    self._records.append((rid, rec))
        if not self._records:
            names = ", ".join(str(s.path) for s in self.sources)
            raise DataError(f"{names}: no usable training record ({self.report.summary()})")

    def __len__(self) -> int:
        return len(self._records)

    def record(self, index: int) -> dict:
        return self._records[index][1]

    def _encode(self, index: int) -> dict:
        """Encode one record or raise ``_Skip(reason)``."""
        rid, rec = self._records[index]
        image = None
        if rec.get("image"):
            path = Path(rec["image"])
            if self.image_root is not None and not path.is_absolute():
                path = self.image_root / path
            if not path.is_file():
                raise _Skip("missing image")
            try:
                image = self.load_image(path)
            except Exception as e:  # noqa: BLE001 - any decoder failure means an unusable image
                raise _Skip(f"unreadable image ({type(e).__name__})") from None
        try:
            item = self.encode_fn(rec["conversations"], image)
        except ValueError:
            raise _Skip("encode failed") from None
        item = {k: (v.squeeze(0) if k in SEQUENCE_KEYS and v.dim() == 2 and v.shape[0] == 1 else v)
                for k, v in item.items()}
        n = int(item["input_ids"].shape[-1])
        if self.max_length is not None and n > self.max_length:
            raise _Skip("too long")
        if not bool((item["labels"] != IGNORE_INDEX).any()):
            raise _Skip("nothing supervised after encoding")
        return item

    def __getitem__(self, index: int) -> dict:
        skipped = []
        for k in range(min(self.max_substitutions, len(self))):
            i = (index + k) % len(self)
            if i in self._bad:
                skipped.append((i, self._bad[i], self._records[i][0]))
                continue
            try:
                item = self._encode(i)
            except _Skip as s:
                self._bad[i] = s.reason
                skipped.append((i, s.reason, self._records[i][0]))
                continue
            item["_skipped"] = skipped
            return item
        names = ", ".join(str(s.path) for s in self.sources)
        raise DataError(f"{names}: {len(skipped)} consecutive bad records from index {index} "
                        f"(first: {[(rid, why) for _, why, rid in skipped[:3]]})")


class _Skip(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------


def pad_collate(batch: list[dict], pad_token_id: int = 0) -> dict:
    """Right-padded training batch (``grace.models.collate``) plus the skipped-record log.

        collate_fn = functools.partial(pad_collate, pad_token_id=tokenizer.pad_token_id)
    """
    from grace.models import collate

    out = collate([{k: v for k, v in item.items() if not k.startswith("_")} for item in batch], pad_token_id)
    out["_skipped"] = [s for item in batch for s in item.get("_skipped", [])]
    return out
