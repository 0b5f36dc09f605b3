"""``grace export``: a QAT or packed checkpoint -> a standard checkpoint that loads without grace.

Targets (FORMATS.md §3): compressed-tensors ``pack-quantized`` (W4 and W8; transformers with the
``compressed-tensors`` package, vLLM) and AWQ GEMM with a standard ``quantization_config`` (W4;
transformers with ``gptqmodel``, vLLM). Both in the transformers layout, for LLaVA (from the
original haotian-liu layout too: config converted, CLIP tower added, vocabulary extended, see
:mod:`grace.export.llava`) and Qwen3-VL.

Invariants:

* **Codes are carried over exactly.** They come from the source's own integers (QAT: the
  pack-exact ``round(w / fp16(s))`` of the grid weight, refused if off-grid; packed: unpacked),
  are packed, unpacked again and compared: a single differing code aborts the export. Only the
  scale may change dtype; the largest relative change versus the scale the source itself
  dequantises with is reported (0.0 = bit-exact, the case for ``--dtype float16``).
* **Everything is checked before anything is written**: every module the target format cannot
  express is refused with its name; a meta-device model is built from the exported config, and
  every tensor's name and shape, and the ignore list (evaluated with the loaders' own matching
  rules), are checked against it.
* **Bounded memory and atomic output**: tensors stream one at a time into shards
  (:class:`~grace.formats.shards.ShardWriter`) in a temporary sibling directory renamed at the
  end; an existing destination is refused and a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from grace.errors import GraceError
from grace.export import llava as L
from grace.export import names as N
from grace.export.source import Source, open_source
from grace.formats import awq_hf
from grace.formats import compressed_tensors as CT
from grace.formats.checkpoint import INDEX_FILE
from grace.formats.metadata import METADATA_FILE
from grace.formats.qat_sidecar import SIDECAR_BIN, SIDECAR_SAFETENSORS, SPEC_FILE
from grace.formats.shards import ProgressBar, ShardWriter

FORMATS = ("compressed-tensors", "awq")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
EXPORT_INFO_FILE = "grace_export.json"
_NOT_COPIED = {"config.json", INDEX_FILE, SIDECAR_BIN, SIDECAR_SAFETENSORS, METADATA_FILE, SPEC_FILE,
               "generation_config.json", EXPORT_INFO_FILE}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


class ExportError(GraceError, ValueError):
    """A model or option that the requested standard format cannot express."""


@dataclass
class ExportReport:
    src: Path
    dst: Path
    format: str
    family: str
    layout: str
    source_form: str
    bits: int
    group_size: int
    dtype: str
    n_modules: int
    max_code_error: int
    scale_max_rel_change: float  # stored scale vs the scale the source dequantises with
    bytes_written: int
    seconds: float
    ignore: list[str] = field(default_factory=list)
    added_token_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.max_code_error == 0 and self.scale_max_rel_change == 0.0


def export_checkpoint(src: str | Path, dst: str | Path, fmt: str, *, vision_tower: str | Path | None = None,
                      dtype: str | torch.dtype = "float16", shard_bytes: int = 2 << 30,
                      progress: bool = True) -> ExportReport:
    """Export the QAT / packed checkpoint ``src`` as ``fmt`` into the new directory ``dst``.

        report = export_checkpoint("ckpt/qat", "ckpt/ct", "compressed-tensors", dtype="float16")
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    tdtype = _dtype(dtype)
    if dst.exists():
        raise ExportError(f"{dst}: destination already exists (refusing to overwrite)")
    source = open_source(src, vision_tower)
    notes: list[str] = []

    # ---- 1. can the target format express every module? ---------------------------------
    group_size = _common_group_size(source)
    for name, e in source.modules.items():
        if fmt == "awq":
            awq_hf.check_expressible(name, e.out_features, e.in_features, e.group_size, source.bits)
        else:
            try:
                CT.check_expressible(name, e.out_features, e.in_features, e.group_size, source.bits)
            except CT.CompressedTensorsError as err:
                raise ExportError(str(err)) from None
    if fmt == "awq" and tdtype != torch.float16:
        notes.append("AWQ stores fp16 scales whatever --dtype is; vLLM's plain AWQ kernel runs fp16 only")

    # ---- 2. the exported config and vocabulary ----------------------------------------------
    cfg = _export_config(source)
    extra_rows = _vocab_extension(source, cfg)
    new_ids = list(range(extra_rows[0], extra_rows[0] + extra_rows[1])) if extra_rows else []

    # ---- 3. check names, shapes and the ignore list against a meta model ---------------------
    linears = _check_against_meta_model(source, cfg, extra_rows)
    if fmt == "compressed-tensors":
        ignore = _ct_ignore(source, linears)
        qc = CT.config_block(source.bits, group_size, ignore)
    else:
        ignore = _awq_skip(source, linears)
        qc = awq_hf.config_block(group_size, ignore)
    notes += _fusion_notes(source, linears)
    cfg["quantization_config"] = qc
    dname = "float16" if tdtype == torch.float16 else "bfloat16"
    cfg["dtype"] = dname
    cfg["torch_dtype"] = dname  # transformers 4.x / older vLLM read this key

    # ---- 4. write -----------------------------------------------------------------------------
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        notes += _side_files(source, tmp, cfg, new_ids)
        writer = ShardWriter(tmp, shard_bytes)
        bar = ProgressBar(progress, len(source.dense) + len(source.modules), "exporting")
        for key in sorted(source.dense):
            t = _cast(source.read_dense(key), tdtype, source.dense[key].source)
            if key in (N.EMBED_KEY, N.LM_HEAD_KEY) and extra_rows:
                t = L.extend_rows(t, extra_rows[1])  # the mean of the rows as exported
            writer.add(N.runtime_to_written(source.family, key), t)
            bar.advance()
        max_err, max_rel = 0, 0.0
        for name in sorted(source.modules):
            codes, scales, _g = source.read_quantized(name)
            tensors, err, rel = _pack_verified(fmt, name, codes, scales, source.bits, tdtype)
            max_err, max_rel = max(max_err, err), max(max_rel, rel)
            base = N.runtime_to_written(source.family, name + ".weight")[: -len(".weight")]
            for leaf, t in tensors.items():
                writer.add(f"{base}.{leaf}", t)
            bar.advance()
        bar.close()
        writer.finish()
        bytes_written = writer.total
        if max_err:
            raise ExportError(f"{src}: verification failed: max int-code error {max_err} after pack -> unpack")
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        info = {"grace_export": 1, "source": str(src), "source_form": source.form, "family": source.family,
                "layout": source.layout, "format": fmt, "bits": source.bits, "group_size": group_size,
                "dtype": dname, "quantized_modules": len(source.modules), "max_code_error": max_err,
                "scale_max_rel_change": max_rel, "added_token_ids": new_ids}
        (tmp / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2))
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if max_rel:
        notes.append(f"scales were rounded to {'fp16' if fmt == 'awq' else dname} (largest relative change "
                     f"{max_rel:.2e}); codes are exact")
    for d in source.dropped:
        notes.append(f"dropped: {d}")
    return ExportReport(src, dst, fmt, source.family, source.layout, source.form, source.bits, group_size, dname,
                        len(source.modules), max_err, max_rel, bytes_written,
                        time.perf_counter() - t0, ignore, new_ids, notes)


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------


def _dtype(d: str | torch.dtype) -> torch.dtype:
    if isinstance(d, torch.dtype):
        if d not in DTYPES.values():
            raise ExportError(f"--dtype must be float16 or bfloat16; got {d}")
        return d
    if d not in DTYPES:
        raise ExportError(f"--dtype must be float16 or bfloat16; got {d!r}")
    return DTYPES[d]


def _common_group_size(source: Source) -> int:
    """Both formats carry one group size; a module with another (a row-wide group) is refused."""
    from collections import Counter

    common = Counter(e.group_size for e in source.modules.values()).most_common(1)[0][0]
    for name, e in source.modules.items():
        if e.group_size != common:
            why = " (a row-wide group: the group size does not divide in_features)" \
                if e.group_size == e.in_features else ""
            raise ExportError(f"{name}: group size {e.group_size}{why} differs from the model's {common}; the "
                              f"standard formats carry one group size for all quantized modules")
    return common


def _export_config(source: Source) -> dict:
    if source.family == "llava" and source.layout == "original":
        return L.convert_config(source.ckpt.config, source.clip_config or {}, str(source.path / "config.json"))
    cfg = json.loads(json.dumps(source.ckpt.config))  # deep copy
    for k in ("quantization_config", "awq_packing"):
        cfg.pop(k, None)
        if isinstance(cfg.get("text_config"), dict):
            cfg["text_config"].pop(k, None)
    if source.family == "llava":
        tc = cfg.setdefault("text_config", {})
        image_id = cfg.get("image_token_id", cfg.get("image_token_index"))
        if image_id is not None and tc.get("vocab_size") is not None and image_id >= tc["vocab_size"]:
            tc["vocab_size"] = image_id + 1  # placeholder id past the vocabulary: give it a row
    return cfg


def _vocab_extension(source: Source, cfg: dict) -> tuple[int, int] | None:
    """``(first new id, n new rows)`` when the exported vocabulary is larger than the source's rows."""
    if source.family != "llava" or N.EMBED_KEY not in source.dense:
        return None
    rows = source.dense[N.EMBED_KEY].shape[0]
    target = int(cfg.get("text_config", {}).get("vocab_size", rows))
    if target <= rows:
        return None
    if N.LM_HEAD_KEY in source.dense and source.dense[N.LM_HEAD_KEY].shape[0] != rows:
        raise ExportError(f"{source.path}: embed_tokens has {rows} rows but lm_head has "
                          f"{source.dense[N.LM_HEAD_KEY].shape[0]}")
    return rows, target - rows


def _meta_model(cfg: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModelForImageTextToText

    d = {k: v for k, v in cfg.items() if k not in ("quantization_config", "dtype", "torch_dtype")}
    try:
        config = AutoConfig.for_model(d.pop("model_type"), **d)
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config)
    except Exception as e:  # noqa: BLE001 - a config transformers cannot build is a user-facing error
        raise ExportError(f"the exported config does not build a transformers model "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def _check_against_meta_model(source: Source, cfg: dict, extra_rows) -> dict[str, nn.Linear]:
    """Every tensor's runtime name and shape against the model the exported config builds."""
    model = _meta_model(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    provided: dict[str, tuple[int, ...]] = {}
    for key, e in source.dense.items():
        shape = tuple(e.shape)
        if key in (N.EMBED_KEY, N.LM_HEAD_KEY) and extra_rows:
            shape = (shape[0] + extra_rows[1], *shape[1:])
        provided[key] = shape
    for name, e in source.modules.items():
        m = linears.get(name)
        if m is None:
            raise ExportError(f"quantized module {e.source!r} (-> {name}) is not a Linear layer of the "
                              f"{source.family} model its config describes")
        provided[f"{name}.weight"] = (e.out_features, e.in_features)
    unexpected = sorted(set(provided) - set(expected))
    if unexpected:
        srcs = [source.dense[k].source if k in source.dense else k for k in unexpected[:3]]
        raise ExportError(f"{source.path}: {len(unexpected)} tensors have no place in the {source.family} model "
                          f"(first: {', '.join(srcs)})")
    for k, shape in provided.items():
        if expected[k] != shape:
            what = source.dense[k].source if k in source.dense else k
            raise ExportError(f"{what}: shape {shape} does not match the model's {k} {expected[k]}")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    missing = sorted(k for k in set(expected) - set(provided) if not (tied and k == N.LM_HEAD_KEY))
    if missing:
        raise ExportError(f"{source.path}: {len(missing)} model tensors are missing from the source "
                          f"(first: {', '.join(missing[:3])})")
    return linears


def _ct_ignore(source: Source, linears: dict[str, nn.Linear]) -> list[str]:
    """Family patterns that match no quantized module, then exact patterns for what is left."""
    quantized = set(source.modules)
    plain = [n for n in linears if n not in quantized]
    ignore = [p for p in N.CT_IGNORE_CANDIDATES[source.family]
              if not any(CT.matches(q, [p]) for q in quantized)]
    for n in plain:
        if not CT.matches(n, ignore):
            ignore.append(N.ct_exact_pattern(n))
    scheme = CT.Scheme(source.bits, 0, ("Linear",), tuple(ignore))
    for n in linears:
        if CT.quantized_by_scheme(n, scheme) != (n in quantized):
            raise ExportError(f"{n}: the compressed-tensors ignore list {ignore} would treat it wrongly")
    return ignore


def _awq_skip(source: Source, linears: dict[str, nn.Linear]) -> list[str]:
    quantized = set(source.modules)
    fam = source.family

    def written(n: str) -> str:
        return N.runtime_to_written(fam, n + ".weight")[: -len(".weight")]

    def skips(n: str, pats) -> bool:
        return awq_hf.transformers_skips(n, pats) or awq_hf.vllm_skips(written(n), pats)

    skip = [p for p in N.AWQ_SKIP_CANDIDATES[fam] if not any(skips(q, [p]) for q in quantized)]
    for n in linears:
        if n not in quantized and not (awq_hf.transformers_skips(n, skip) and awq_hf.vllm_skips(written(n), skip)):
            for p in (n, written(n)):
                if p not in skip:
                    skip.append(p)
    for n in linears:
        t_ok = awq_hf.transformers_skips(n, skip) != (n in quantized)
        v_ok = awq_hf.vllm_skips(written(n), skip) != (n in quantized)
        if not (t_ok and v_ok):
            raise ExportError(f"{n}: the AWQ modules_to_not_convert list {skip} would treat it wrongly")
    return skip


def _fusion_notes(source: Source, linears) -> list[str]:
    """vLLM fuses q/k/v and gate/up; a fused group mixing quantized and plain layers will not load there."""
    notes = []
    groups: dict[str, set[bool]] = {}
    for n in linears:
        parent, _, leaf = n.rpartition(".")
        kind = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}.get(leaf)
        if kind and parent.startswith(N.LM_PREFIX):
            groups.setdefault(f"{parent}.{kind}", set()).add(n in source.modules)
    mixed = sorted(k for k, v in groups.items() if len(v) > 1)
    if mixed:
        notes.append(f"vLLM fuses q/k/v and gate/up projections; {len(mixed)} fused groups mix quantized and "
                     f"unquantized layers (first: {mixed[0]}), which vLLM cannot load (transformers can)")
    return notes


def _side_files(source: Source, tmp: Path, cfg: dict, new_ids: list[int]) -> list[str]:
    """Tokenizer, processor, chat template, generation config: copied, converted where needed."""
    notes = []
    for p in sorted(source.path.iterdir()):
        if p.name.startswith(".") or p.name in _NOT_COPIED or p.name.endswith(_WEIGHT_SUFFIXES):
            continue
        if p.is_dir():
            notes.append(f"not copied: directory {p.name}/")
            continue
        shutil.copy2(p, tmp / p.name)
    original = source.family == "llava" and source.layout == "original"
    if original:
        vocab = int(source.ckpt.config["vocab_size"])
        notes.append(L.write_tokenizer(tmp, vocab))
        L.write_processor(tmp, source.clip_config or {}, source.clip_preprocessor,
                          cfg.get("vision_feature_select_strategy", "default"),
                          source.ckpt.config.get("image_aspect_ratio"))
    if new_ids:
        gc = L.generation_config(source.path, cfg.get("text_config", {}), new_ids)
        (tmp / "generation_config.json").write_text(json.dumps(gc, indent=2))
        if not original:
            notes.append(f"added embedding/lm_head rows {new_ids} for the image placeholder; make sure the "
                         f"tokenizer maps the image token to id {new_ids[-1]}")
    elif (source.path / "generation_config.json").is_file():
        shutil.copy2(source.path / "generation_config.json", tmp / "generation_config.json")
    return notes


def _cast(t: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    if not t.is_floating_point() or t.dtype == dtype:
        return t
    out = t.to(dtype)
    if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(t).all()):
        raise ExportError(f"{what}: values up to {float(t.abs().max()):.3g} overflow {dtype}; "
                          f"export with --dtype bfloat16")
    return out


def _pack_verified(fmt: str, name: str, codes: torch.Tensor, scales: torch.Tensor, bits: int,
                   dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], int, float]:
    """Pack, unpack, compare: ``(tensors, max code error, max relative scale change)``."""
    if fmt == "awq":
        t = awq_hf.pack(codes, scales, name)
        codes2, s2, _ = awq_hf.unpack(t["qweight"], t["qzeros"], t["scales"])
    else:
        t = CT.pack(codes, scales, bits, dtype, name)
        codes2, s2, _ = CT.unpack(t["weight_packed"], t["weight_scale"], t["weight_shape"], bits, name)
    err = 0 if torch.equal(codes2, codes) else int((codes2.to(torch.int16) - codes.to(torch.int16)).abs().max())
    if not bool(torch.isfinite(s2).all()) or bool(((s2.float() == 0) & (scales != 0)).any()):
        raise ExportError(f"{name}: scales overflow or underflow {s2.dtype}")
    rel = float(((s2.float() - scales).abs() / scales.abs().clamp_min(1e-30)).max()) if scales.numel() else 0.0
    return t, err, rel
