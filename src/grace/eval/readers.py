"""Readers for the file formats benchmark users actually have on disk.

Invariant: every reader returns plain Python rows (dicts of str/int/float/None/list) and raises a
:class:`GraceError` that names the file (and the 1-based line or row) for malformed input. Nothing
here knows about a particular benchmark; the benchmark modules pick columns out of these rows.

Formats: JSON, JSON Lines (LLaVA question/answer files, POPE label files), TSV/CSV (VLMEvalKit
MMBench-style tables, base64 images inline), XLSX (the LLaVA MMBench upload sheet; read with the
standard library so no spreadsheet dependency is needed) and Parquet (the lmms-eval / Hugging Face
dataset exports; needs the optional ``pyarrow``). Images stored inside Parquet files are not read
until a generation actually needs them (:class:`ImageRef`), because the big exports do not fit in
memory.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from grace.errors import GraceError

# ----------------------------------------------------------------------------- JSON / JSONL


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON Lines file; a bad line raises GraceError('file:line: ...'). Blank lines are skipped.

    ``rows = read_jsonl("llava_pope_test.jsonl")``
    """
    path = Path(path)
    rows: list[dict] = []
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as e:
        raise GraceError(f"{path}: cannot open ({e.strerror})") from e
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise GraceError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from e
            if not isinstance(obj, dict):
                raise GraceError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            obj["__line__"] = lineno
            rows.append(obj)
    return rows


def read_json(path: str | Path) -> Any:
    """A whole JSON document; a syntax error raises GraceError naming the file, line and column.

    ``problems = read_json("problems.json")``
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GraceError(f"{path}: cannot open ({e.strerror})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise GraceError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from e


def looks_like_jsonl(path: Path) -> bool:
    """True if the first non-blank line of ``path`` parses as a whole JSON object (JSON Lines)."""
    try:
        with path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    try:
                        return isinstance(json.loads(line), dict)
                    except json.JSONDecodeError:
                        return False
    except (OSError, UnicodeDecodeError):
        return False
    return False


def read_json_or_jsonl(path: str | Path) -> Any:
    """JSON Lines if the file is line-delimited (POPE labels are JSONL despite '.json'), else JSON."""
    path = Path(path)
    if path.suffix == ".jsonl" or looks_like_jsonl(path):
        rows = read_jsonl(path)
        # A single-line JSON document holding one object is ambiguous; a ``.json`` file is JSON.
        if path.suffix == ".json" and len(rows) == 1:
            doc = read_json(path)
            return doc
        return rows
    return read_json(path)


# ----------------------------------------------------------------------------- TSV / CSV


def read_table_text(path: str | Path) -> list[dict]:
    """Rows of a TSV (``.tsv``) or CSV (``.csv``) file with a header line; values are strings.

    ``rows = read_table_text("mmbench_dev_20230712.tsv")``
    """
    path = Path(path)
    # base64 images in MMBench/VLMEvalKit tables are far larger than csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        fh = path.open("r", encoding="utf-8", newline="")
    except OSError as e:
        raise GraceError(f"{path}: cannot open ({e.strerror})") from e
    rows: list[dict] = []
    with fh:
        reader = csv.reader(fh, delimiter=delim)
        try:
            header = next(reader)
        except StopIteration:
            return []
        except csv.Error as e:
            raise GraceError(f"{path}:1: malformed header ({e})") from e
        header = [h.lstrip("\ufeff") for h in header]
        try:
            for values in reader:
                if not values:
                    continue
                if len(values) != len(header):
                    raise GraceError(
                        f"{path}:{reader.line_num}: row has {len(values)} fields, header has {len(header)}"
                    )
                row = dict(zip(header, values, strict=True))
                row["__line__"] = reader.line_num
                rows.append(row)
        except csv.Error as e:
            raise GraceError(f"{path}:{reader.line_num}: malformed row ({e})") from e
    return rows


# ----------------------------------------------------------------------------- XLSX

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_M = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def _col_index(ref: str) -> int:
    """0-based column index of a cell reference such as 'AB12'."""
    n = 0
    for ch in ref:
        if ch.isalpha():
            n = n * 26 + (ord(ch.upper()) - 64)
        else:
            break
    return n - 1


def _xlsx_number(text: str) -> int | float:
    v = float(text)
    # pandas writes integer columns as numbers; show them back as integers (index 241, not 241.0).
    if v.is_integer() and "e" not in text.lower() and "." not in text:
        return int(v)
    return v


def read_xlsx(path: str | Path) -> list[dict]:
    """Rows of the first worksheet of an .xlsx file, keyed by the header row; empty cells are None.

    ``rows = read_xlsx("upload.xlsx")``  # LLaVA's MMBench submission sheet
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise GraceError(f"{path}: not a readable .xlsx file ({e})") from e
    with zf:
        names = set(zf.namelist())
        shared: list[str] = []
        if "xl/sharedStrings.xml" in names:
            root = ElementTree.fromstring(zf.read("xl/sharedStrings.xml"))
            for si in root.iter(f"{_M}si"):
                shared.append("".join(t.text or "" for t in si.iter(f"{_M}t")))
        sheets = sorted(n for n in names if n.startswith("xl/worksheets/sheet") and n.endswith(".xml"))
        if not sheets:
            raise GraceError(f"{path}: no worksheet in the workbook")
        # sheet1.xml is the first sheet for every writer we know of (openpyxl, xlsxwriter, Excel).
        sheet = "xl/worksheets/sheet1.xml" if "xl/worksheets/sheet1.xml" in names else sheets[0]
        table: list[list[Any]] = []
        try:
            with zf.open(sheet) as fh:
                for _event, elem in ElementTree.iterparse(fh, events=("end",)):
                    if elem.tag != f"{_M}row":
                        continue
                    cells: dict[int, Any] = {}
                    for c in elem.iter(f"{_M}c"):
                        col = _col_index(c.get("r", "")) if c.get("r") else len(cells)
                        kind = c.get("t")
                        value: Any = None
                        if kind == "inlineStr":
                            is_ = c.find(f"{_M}is")
                            if is_ is not None:
                                value = "".join(t.text or "" for t in is_.iter(f"{_M}t"))
                        else:
                            v = c.find(f"{_M}v")
                            if v is not None and v.text is not None:
                                if kind == "s":
                                    value = shared[int(v.text)]
                                elif kind in ("str", "e"):
                                    value = v.text
                                elif kind == "b":
                                    value = v.text == "1"
                                else:
                                    value = _xlsx_number(v.text)
                        cells[col] = value
                    width = max(cells) + 1 if cells else 0
                    table.append([cells.get(i) for i in range(width)])
                    elem.clear()
        except (ElementTree.ParseError, KeyError, ValueError, IndexError) as e:
            raise GraceError(f"{path}: malformed worksheet {sheet} ({e})") from e
    if not table:
        return []
    header = [str(h) if h is not None else f"col{i}" for i, h in enumerate(table[0])]
    rows = []
    for rowno, values in enumerate(table[1:], start=2):
        row = {h: (values[i] if i < len(values) else None) for i, h in enumerate(header)}
        row["__line__"] = rowno
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- Parquet


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise GraceError(
            "reading .parquet files needs pyarrow: pip install 'grace-vlm[eval]' (or pip install pyarrow)"
        ) from e
    return pq


def _is_image_field(field_type) -> bool:
    """True for a Hugging Face ``Image`` column (struct<bytes, path>) or a list of them."""
    import pyarrow as pa

    t = field_type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    if pa.types.is_struct(t):
        names = {t.field(i).name for i in range(t.num_fields)}
        return "bytes" in names
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def read_parquet(path: str | Path) -> list[dict]:
    """Rows of a Parquet file; image columns come back as lazy :class:`ImageRef` objects (or lists).

    ``rows = read_parquet("test-00000-of-00004.parquet")``
    """
    pq = _pyarrow_parquet()
    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt footer
        raise GraceError(f"{path}: not a readable Parquet file ({e})") from e
    schema = pf.schema_arrow
    image_cols = [f.name for f in schema if _is_image_field(f.type)]
    other_cols = [f.name for f in schema if f.name not in image_cols]
    rows: list[dict] = []
    for rg in range(pf.num_row_groups):
        try:
            tbl = pf.read_row_group(rg, columns=other_cols)
            img_meta = pf.read_row_group(rg, columns=image_cols) if image_cols else None
        except Exception as e:
            raise GraceError(f"{path}: row group {rg} is unreadable ({e})") from e
        data = tbl.to_pylist()
        for i, row in enumerate(data):
            row["__line__"] = len(rows) + 1
            for col in image_cols:
                # Only the (small) presence/length information is touched here; the bytes stay on disk.
                cell = img_meta.column(col)[i].as_py() if img_meta is not None else None
                row[col] = _lazy_image_cell(path, rg, i, col, cell)
            rows.append(row)
    return rows


def _lazy_image_cell(path: Path, rg: int, i: int, col: str, cell: Any) -> Any:
    if cell is None:
        return None
    if isinstance(cell, list):
        return [
            ParquetImage(path, rg, i, col, k, name=(c or {}).get("path") if isinstance(c, dict) else None)
            if c is not None
            else None
            for k, c in enumerate(cell)
        ]
    if isinstance(cell, dict):
        # A struct with no bytes is a missing image (reported when used), not a text-only question.
        return ParquetImage(path, rg, i, col, None, name=cell.get("path"))
    return ParquetImage(path, rg, i, col, None, name=None)


class _RowGroupCache:
    """Keeps the image column of the most recently used row groups (the runner reads sequentially)."""

    def __init__(self, size: int = 2):
        self.size = size
        self._store: dict[tuple, list] = {}

    def get(self, path: Path, rg: int, col: str) -> list:
        key = (str(path), rg, col)
        if key in self._store:
            val = self._store.pop(key)
            self._store[key] = val
            return val
        pq = _pyarrow_parquet()
        tbl = pq.ParquetFile(path).read_row_group(rg, columns=[col])
        val = tbl.column(col).to_pylist()
        self._store[key] = val
        while len(self._store) > self.size:
            self._store.pop(next(iter(self._store)))
        return val


_ROW_GROUPS = _RowGroupCache()


# ----------------------------------------------------------------------------- images


class MissingImage(Exception):
    """Raised by :meth:`ImageRef.open` when the image cannot be found or decoded (not a GraceError:
    the runner counts these and carries on)."""


@dataclass
class ImageRef:
    """Where one question's image lives: a path relative to some image root, or inline bytes.

    ``img = ref.open(roots)`` returns a loaded PIL image or raises :class:`MissingImage`.
    """

    name: str | None = None  # relative path as written in the question file
    data: bytes | None = None  # inline bytes
    roots: list[Path] = field(default_factory=list)
    b64: str | None = None  # inline base64 text (TSV cell), decoded only when the image is opened
    where: str = ""

    def describe(self) -> str:
        return self.name or (f"<inline image at {self.where}>" if self.where else "<inline image>")

    def _bytes(self) -> bytes | None:
        if self.data is None and self.b64 is not None:
            try:
                return base64.b64decode(self.b64, validate=False)
            except (ValueError, TypeError) as e:
                raise MissingImage(f"image unreadable: {self.describe()} (bad base64: {e})") from e
        return self.data

    def resolve(self, extra_roots: Sequence[Path] = ()) -> Path | None:
        if self.name is None:
            return None
        p = Path(self.name)
        if p.is_absolute():
            return p if p.is_file() else None
        for root in [*extra_roots, *self.roots]:
            cand = root / p
            if cand.is_file():
                return cand
        return None

    def open(self, extra_roots: Sequence[Path] = (), mode: str | None = "RGB"):
        from PIL import Image, UnidentifiedImageError

        raw = self._bytes()
        try:
            if raw is not None:
                img = Image.open(io.BytesIO(raw))
            else:
                path = self.resolve(extra_roots)
                if path is None:
                    raise MissingImage(f"image not found: {self.describe()}")
                img = Image.open(path)
            img.load()
        except MissingImage:
            raise
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise MissingImage(f"image unreadable: {self.describe()} ({e})") from e
        return img.convert(mode) if mode is not None and img.mode != mode else img


class ParquetImage(ImageRef):
    """An image cell inside a Parquet file, fetched on first use."""

    def __init__(self, path: Path, rg: int, row: int, col: str, list_index: int | None, name=None):
        super().__init__(name=None, data=None)
        self._loc = (Path(path), rg, row, col, list_index)
        self._label = f"{Path(path).name}[row group {rg}, row {row}, {col}" + (
            f"[{list_index}]]" if list_index is not None else "]"
        )
        self.file_name = name

    def describe(self) -> str:
        return self._label

    def _bytes(self) -> bytes | None:
        path, rg, row, col, k = self._loc
        try:
            cell = _ROW_GROUPS.get(path, rg, col)[row]
        except Exception as e:
            raise MissingImage(f"image unreadable: {self._label} ({e})") from e
        if k is not None:
            cell = cell[k] if cell is not None and k < len(cell) else None
        if isinstance(cell, dict):
            cell = cell.get("bytes")
        if cell is None:
            raise MissingImage(f"image missing: {self._label}")
        return cell


def image_from_base64(text: str, where: str) -> ImageRef | None:
    """An inline image from a base64 table cell (VLMEvalKit TSV), decoded lazily; None if empty."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        return None
    return ImageRef(name=None, b64=str(text), where=where)


# ----------------------------------------------------------------------------- data discovery


DATA_EXTS = {".json", ".jsonl", ".tsv", ".csv", ".xlsx", ".parquet", ".txt"}


@dataclass
class DataFiles:
    """The files a user pointed ``--data`` at: explicit files plus data files found under folders.

    Benchmarks pick their inputs from ``files`` by name pattern; ``dirs`` are the candidate image
    roots (the folders given, and their ``images/`` subfolders).
    """

    files: list[Path]
    dirs: list[Path]

    @classmethod
    def from_paths(cls, paths: str | Path | Iterable[str | Path], max_depth: int = 3) -> DataFiles:
        if isinstance(paths, str | Path):
            paths = [paths]
        files: list[Path] = []
        dirs: list[Path] = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                dirs.append(p)
                files.extend(_walk(p, max_depth))
            elif p.is_file():
                files.append(p)
                dirs.append(p.parent)
            else:
                raise GraceError(f"{p}: no such file or folder")
        seen: set[Path] = set()
        uniq = []
        for f in files:
            r = f.resolve()
            if r not in seen:
                seen.add(r)
                uniq.append(f)
        return cls(files=uniq, dirs=dirs)

    def match(self, *patterns: str) -> list[Path]:
        """Files whose name matches any fnmatch pattern (case-insensitive), in a stable order."""
        import fnmatch

        out = [f for f in self.files if any(fnmatch.fnmatch(f.name.lower(), p.lower()) for p in patterns)]
        return sorted(out, key=lambda f: str(f))

    def image_roots(self, *extra: Path) -> list[Path]:
        roots: list[Path] = []
        for d in [*extra, *self.dirs]:
            for cand in (d, d / "images"):
                if cand.is_dir() and cand not in roots:
                    roots.append(cand)
        return roots


def _walk(root: Path, max_depth: int) -> Iterator[Path]:
    # Image folders hold hundreds of thousands of files; only descend a few levels and only keep data files.
    stack = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for e in entries:
            if e.is_file() and e.suffix.lower() in DATA_EXTS:
                yield e
            elif e.is_dir() and depth < max_depth and not e.name.startswith("."):
                stack.append((e, depth + 1))


def is_missing(value: Any) -> bool:
    """LLaVA's ``is_none``: None, NaN, or the strings 'nan' / 'none' (any case) count as absent."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip().lower() in ("nan", "none", ""):
        return True
    return False


def read_rows(path: str | Path) -> list[dict]:
    """Rows of any tabular file by extension: .parquet, .jsonl, .tsv/.csv, .xlsx, or a .json list.

    ``rows = read_rows("MMStar/val.parquet")``
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".parquet":
        return read_parquet(path)
    if ext in (".tsv", ".csv"):
        return read_table_text(path)
    if ext == ".xlsx":
        return read_xlsx(path)
    doc = read_json_or_jsonl(path)
    if isinstance(doc, list):
        for i, r in enumerate(doc):
            if not isinstance(r, dict):
                raise GraceError(f"{path}: element {i} is not an object")
            r.setdefault("__line__", i + 1)
        return doc
    raise GraceError(f"{path}: expected a list of records (JSON Lines, a JSON list or a table)")


def require(row: dict, fields: Sequence[str], where: str) -> None:
    """Raise GraceError naming ``where`` (file:line) if ``row`` lacks any of ``fields``."""
    missing = [f for f in fields if f not in row]
    if missing:
        raise GraceError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)}")


def read_json_records(path: Path, field: str, what: str, fields: Sequence[str] = ()) -> tuple[dict, list[dict]]:
    """``(document, document[field])`` of a JSON object holding a list of records (VQA-style files).

    Raises GraceError naming the file if it is not such an object, and naming ``field[i]`` if a
    record lacks one of ``fields``.
    """
    doc = read_json(path)
    if not isinstance(doc, dict) or field not in doc:
        raise GraceError(f"{path}: not {what} (no {field!r} list)")
    for i, r in enumerate(doc[field]):
        require(r, fields, f"{path}: {field}[{i}]")
    return doc, doc[field]


def where(path: Path, row: dict) -> str:
    """'file:line' for messages about one row."""
    return f"{path}:{row.get('__line__', '?')}"


def first_jsonl_row(path: Path) -> dict:
    """The first non-blank line of a JSON Lines file as a dict ({} if unreadable or not an object);
    used only to tell file kinds apart -- real reading reports errors with line numbers."""
    try:
        with Path(path).open("r", encoding="utf-8") as fh:
            line = next((ln for ln in fh if ln.strip()), "")
        row = json.loads(line) if line else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return row if isinstance(row, dict) else {}
