"""What an export reads: a QAT or packed checkpoint (plus, for original LLaVA, a CLIP directory).

:func:`open_source` indexes everything from safetensors headers and the sidecar / metadata
without reading tensor data, and normalises every name to the *runtime* names of
:mod:`grace.export.names`. Tensors are then read one at a time:

* :meth:`Source.read_dense` -> one float/int tensor as stored (vision tower, norms, embeddings...);
* :meth:`Source.read_quantized` -> ``(codes int8 (out, in), scale grid fp32 (out, in/g), g)``,
  the codes carried over *exactly*: from a QAT checkpoint by the pack-exact derivation
  ``round(weight / fp16(exp(log_scale)))`` of :func:`grace.formats.pack_dir.grid_codes`
  (refusing off-grid weights), from a packed checkpoint by unpacking its AWQ / W8 tensors.

``reference_scale_dtype`` says which scale the source's own dequantisation uses, so the exporter
can report how far the stored scales are from it (0 = bit-exact): fp16 for packed checkpoints
and for QAT checkpoints whose ``grace_quant.json`` says ``scale_dtype: float16``; fp32 (the
learned ``exp(log_scale)``) when the spec says so or is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from grace.errors import GraceError
from grace.export import names as N
from grace.formats import awq_gemm
from grace.formats.checkpoint import CheckpointDir, read_header
from grace.formats.metadata import METADATA_FILE, FormatError, PackedMetadata
from grace.formats.pack_dir import grid_codes
from grace.formats.qat_sidecar import infer_bits, load_spec, open_sidecar


class ExportSourceError(GraceError, ValueError):
    """A source checkpoint (or CLIP directory) that cannot be exported; the message names the file."""


@dataclass
class DenseEntry:
    source: str  # source key (for messages)
    shape: tuple[int, ...]
    dtype: str
    read: Callable[[], torch.Tensor]


@dataclass
class QuantEntry:
    source: str  # source module name
    out_features: int
    in_features: int
    group_size: int


@dataclass
class Source:
    path: Path
    ckpt: CheckpointDir
    family: str
    layout: str
    form: str
    bits: int
    reference_scale_dtype: torch.dtype
    modules: dict[str, QuantEntry] = field(default_factory=dict)  # runtime module name -> entry
    dense: dict[str, DenseEntry] = field(default_factory=dict)  # runtime key -> entry
    clip_dir: Path | None = None
    clip_config: dict | None = None  # CLIP vision config (original LLaVA only)
    clip_preprocessor: dict | None = None
    dropped: list[str] = field(default_factory=list)  # source keys deliberately not exported
    _side: object = None
    _bins: dict = field(default_factory=dict)  # memory-mapped CLIP .bin files

    # ---- reading -------------------------------------------------------------------------
    def read_dense(self, key: str) -> torch.Tensor:
        return self.dense[key].read()

    def read_quantized(self, name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(codes int8 (out, in), scale grid fp32 (out, in/g), g)`` for runtime module ``name``."""
        e = self.modules[name]
        if self.form == "qat":
            side = self._side
            w, ls = side[f"{e.source}.weight"], side[f"{e.source}.log_scale"]
            codes, s16, g = grid_codes(w, ls, self.bits, e.source)
            if self.reference_scale_dtype == torch.float32:
                scales = torch.exp(ls.float()).reshape(e.out_features, -1)
            else:
                scales = s16
            return codes, scales, g
        tensors = {k: self.ckpt.get(f"{e.source}.{k}") for k in awq_gemm.packed_tensor_names(self.bits)}
        try:
            codes, scales, g = awq_gemm.unpack(tensors, self.bits)
        except awq_gemm.PackError as err:
            raise FormatError(f"{self.path}: module {e.source}: {err}") from None
        return codes, scales.float(), g


def open_source(src: str | Path, vision_tower: str | Path | None = None) -> Source:
    """Index a QAT or packed checkpoint for export (no tensor data read).

        source = open_source("ckpt/llava-qat", vision_tower="clip-vit-large-patch14-336")
    """
    ckpt = CheckpointDir.open(src)
    try:
        family = ckpt.family
    except FormatError as e:
        raise ExportSourceError(str(e)) from None
    if family not in ("llava", "qwen3vl"):
        raise ExportSourceError(f"{ckpt.path / 'config.json'}: grace export supports LLaVA and Qwen3-VL "
                                f"checkpoints; this is a {family!r} model")
    form = ckpt.form
    if form not in ("qat", "packed"):
        raise ExportSourceError(
            f"{ckpt.path}: grace export needs a QAT checkpoint (grid weights + qat_quantized_weights sidecar) or a "
            f"packed one ({METADATA_FILE}); this checkpoint is {form!r}"
        )
    layout = ckpt.layout if family == "llava" else "hf"
    index = ckpt.index()
    mapped: dict[str, str] = {}  # source key -> runtime key
    dropped: list[str] = []
    for key in index:
        rk = N.to_runtime(family, layout, key)
        if rk is None:
            dropped.append(key)
        else:
            mapped[key] = rk

    if form == "qat":
        side = open_sidecar(ckpt.path)
        src_modules = side.module_names()
        if not src_modules:
            raise ExportSourceError(f"{side.path}: the sidecar lists no quantized module")
        spec = load_spec(ckpt.path)
        first = src_modules[0]
        if spec and "bits" in spec:
            bits = int(spec["bits"])
        else:
            bits = infer_bits(side[f"{first}.weight"], side[f"{first}.log_scale"])
        ref = torch.float16 if spec and spec.get("scale_dtype", "float16") == "float16" else torch.float32
        shapes = {}
        for m in src_modules:
            ws, ls = side.shape(f"{m}.weight"), side.shape(f"{m}.log_scale")
            if len(ws) != 2:
                raise ExportSourceError(f"{side.path}: {m}.weight must be 2-D; got shape {ws}")
            n = 1
            for d in ls:
                n *= d
            out_f, in_f = ws
            if n == 0 or n % out_f or in_f % (n // out_f):
                raise ExportSourceError(f"{side.path}: {m}.log_scale has {n} entries, not out*in/g for weight {ws}")
            shapes[m] = (out_f, in_f, in_f // (n // out_f))
    else:
        meta = PackedMetadata.load(ckpt.path)
        bits, side, ref = meta.bits, None, torch.float16
        src_modules = list(meta.modules)
        shapes = {}
        for m in src_modules:
            qw = f"{m}.qweight"
            if qw not in index or f"{m}.scales" not in index:
                raise ExportSourceError(f"{ckpt.path}: module {m!r} is listed in {METADATA_FILE} but "
                                        f"{m}.qweight / {m}.scales are not in the weight files")
            s_shape = index[f"{m}.scales"].shape
            if bits == 4:
                in_f, out_f = index[qw].shape[0], index[qw].shape[1] * 8
            else:
                out_f, in_f = index[qw].shape
            n_groups = s_shape[0]
            if n_groups == 0 or in_f % n_groups:
                raise ExportSourceError(f"{ckpt.path}: {m}.scales has shape {s_shape}, not (in/g, out) for "
                                        f"in_features {in_f}")
            shapes[m] = (out_f, in_f, in_f // n_groups)
    if bits not in (4, 8):
        raise ExportSourceError(f"{ckpt.path}: bits must be 4 or 8 to export; got {bits}")

    source = Source(ckpt.path, ckpt, family, layout, form, bits, ref, _side=side, dropped=dropped)

    # quantized modules, by runtime name
    packed_leaves = set(awq_gemm.packed_tensor_names(bits)) if form == "packed" else set()
    skip_keys: set[str] = set()
    for m in src_modules:
        rname = N.module_to_runtime(family, layout, m)
        if rname in source.modules:
            raise ExportSourceError(f"{ckpt.path}: modules {source.modules[rname].source!r} and {m!r} map to the "
                                    f"same module {rname!r}")
        out_f, in_f, g = shapes[m]
        source.modules[rname] = QuantEntry(m, out_f, in_f, g)
    runtime_quant_weights = {f"{r}.weight" for r in source.modules}
    if form == "qat":
        # the sidecar and the model file may name modules differently (transformers' legacy Llava
        # save): compare in runtime names
        present = set(mapped.values())
        for rname, e in source.modules.items():
            if f"{rname}.weight" not in present:
                raise ExportSourceError(f"{side.path}: module {e.source!r} is absent from the model weights "
                                        f"(no tensor maps to {rname}.weight)")
    for key, rk in mapped.items():
        mod, _, leaf = rk.rpartition(".")
        if rk in runtime_quant_weights:
            e = source.modules[mod]
            if index[key].shape != (e.out_features, e.in_features):
                raise ExportSourceError(f"{ckpt.path}: {key} has shape {index[key].shape} but the sidecar's "
                                        f"{e.source}.weight is {(e.out_features, e.in_features)}")
            skip_keys.add(key)  # replaced by packed tensors
        elif mod in source.modules and leaf in packed_leaves:
            skip_keys.add(key)
    for key, rk in mapped.items():
        if key in skip_keys:
            continue
        if rk in source.dense:
            raise ExportSourceError(f"{ckpt.path}: tensors {source.dense[rk].source!r} and {key!r} map to the same "
                                    f"name {rk!r}")
        info = index[key]
        source.dense[rk] = DenseEntry(key, info.shape, info.dtype, _reader(ckpt, key))
    if form == "qat":
        for rname, e in source.modules.items():  # a bias that lives only in the sidecar
            bkey = f"{e.source}.bias"
            if f"{rname}.bias" not in source.dense and bkey in side:
                source.dense[f"{rname}.bias"] = DenseEntry(bkey, side.shape(bkey), "sidecar",
                                                           (lambda k=bkey: side[k]))

    if family == "llava" and layout == "original":
        _attach_clip(source, vision_tower)
    elif vision_tower is not None:
        raise ExportSourceError(f"{ckpt.path}: --vision-tower is only for original-layout LLaVA checkpoints "
                                f"(this one is a {family} checkpoint in the transformers layout and carries its "
                                f"vision weights)")
    return source


def _reader(ckpt: CheckpointDir, key: str) -> Callable[[], torch.Tensor]:
    return lambda: ckpt.get(key)


# ---------------------------------------------------------------------------------------------
# The CLIP tower of an original-layout LLaVA
# ---------------------------------------------------------------------------------------------


def _attach_clip(source: Source, vision_tower: str | Path | None) -> None:
    cfg = source.ckpt.config
    named = cfg.get("mm_vision_tower")
    if vision_tower is None:
        if named and Path(str(named)).is_dir():
            vision_tower = Path(str(named))
        else:
            raise ExportSourceError(
                f"{source.path / 'config.json'}: an original-layout LLaVA checkpoint has no vision weights; pass "
                f"--vision-tower CLIP_DIR (mm_vision_tower {named!r} is not a local directory)"
            )
    clip = Path(vision_tower)
    if not clip.is_dir():
        raise ExportSourceError(f"{clip}: vision tower directory does not exist")
    cfg_path = clip / "config.json"
    try:
        ccfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ExportSourceError(f"{cfg_path}: missing (not a CLIP model directory)") from None
    except json.JSONDecodeError as e:
        raise ExportSourceError(f"{cfg_path}: not valid JSON ({e})") from None
    mt = ccfg.get("model_type")
    if mt == "clip":
        vcfg = dict(ccfg.get("vision_config") or {})
    elif mt == "clip_vision_model":
        vcfg = dict(ccfg)
    else:
        raise ExportSourceError(f"{cfg_path}: model_type {mt!r} is not a CLIP model (expected 'clip' or "
                                f"'clip_vision_model')")
    vcfg["model_type"] = "clip_vision_model"
    for k in ("architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path"):
        vcfg.pop(k, None)
    source.clip_dir, source.clip_config = clip, vcfg
    pre = clip / "preprocessor_config.json"
    if pre.is_file():
        try:
            source.clip_preprocessor = json.loads(pre.read_text())
        except json.JSONDecodeError as e:
            raise ExportSourceError(f"{pre}: not valid JSON ({e})") from None

    n_before = len(source.dense)
    for path, keys in _clip_weight_files(clip, source._bins):
        for key, (shape, dtype) in keys.items():
            rk = N.clip_to_runtime(key)
            if rk is None:
                continue
            if rk in source.dense:
                raise ExportSourceError(f"{path}: tensor {key!r} maps to {rk!r}, which another file also holds")
            source.dense[rk] = DenseEntry(f"{path.name}:{key}", shape, dtype, _file_reader(path, key, source._bins))
    if len(source.dense) == n_before:
        raise ExportSourceError(f"{clip}: no CLIP vision weights found (expected vision_model.* keys)")
    embedded = [k for k in source.dropped if k.startswith(N.EMBEDDED_CLIP)]
    if embedded:
        source.dropped = [k for k in source.dropped if not k.startswith(N.EMBEDDED_CLIP)] + \
            [f"{len(embedded)} embedded CLIP tensors ({N.EMBEDDED_CLIP}*), replaced by {clip}"]


def _clip_weight_files(clip: Path, cache: dict) -> list[tuple[Path, dict[str, tuple[tuple[int, ...], str]]]]:
    st = sorted(clip.glob("*.safetensors"))
    if st:
        return [(p, {k: (v.shape, v.dtype) for k, v in read_header(p).items()}) for p in st]
    bins = sorted(clip.glob("pytorch_model*.bin"))
    if not bins:
        raise ExportSourceError(f"{clip}: no weights (model.safetensors or pytorch_model.bin)")
    out = []
    for p in bins:
        d = _load_bin(p, cache)
        out.append((p, {k: (tuple(v.shape), str(v.dtype)) for k, v in d.items()}))
    return out


def _load_bin(p: Path, cache: dict) -> dict[str, torch.Tensor]:
    # memory-mapped and weights_only: never runs pickled code, never reads the whole file
    if p not in cache:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - any failure is reported as this file's problem
            raise ExportSourceError(f"{p}: cannot read as a tensor file with weights_only=True "
                                    f"({str(e).splitlines()[0][:160]})") from None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ExportSourceError(f"{p}: expected a dict of name -> tensor")
        cache[p] = obj
    return cache[p]


def _file_reader(path: Path, key: str, cache: dict) -> Callable[[], torch.Tensor]:
    def read() -> torch.Tensor:
        if path.suffix == ".bin":
            return _load_bin(path, cache)[key]
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key)
        except SafetensorError as e:
            raise ExportSourceError(f"{path}: cannot read tensor {key!r} ({e})") from None

    return read
