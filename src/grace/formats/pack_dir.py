"""Stream a QAT checkpoint directory into a packed one (``grace pack``), with verification.

Input: a QAT checkpoint (dense grid weights + sidecar, FORMATS.md §2) in any layout.
Output: the published packed layout (FORMATS.md §1): the same tensors, except that each
quantized linear ``NAME`` becomes ``NAME.qweight`` / ``NAME.qzeros`` (W4) / ``NAME.scales`` /
``NAME.bias`` (fp16); ``awq_quantized_modules.json``; config.json without any
``quantization_config`` and with ``awq_packing``; every other file copied.

Invariants:
* No model is instantiated; tensors are streamed one at a time from safetensors (the sidecar
  lazily or memory-mapped), and output shards are flushed at ``shard_bytes``, so memory stays
  bounded by one layer plus one shard.
* Codes come from the sidecar (``round(weight / exp(log_scale))``); a weight more than
  ``OFF_GRID_TOL`` codes away from its grid is refused (wrong bits or not a QAT checkpoint).
  After packing, the packed tensors are unpacked and compared with the codes: the maximum
  integer-code error must be 0, and the scales must equal the fp16 scales.
* The destination is written to a temporary sibling directory and renamed at the end; an
  existing destination is refused, and a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from grace import numerics
from grace.formats import awq_gemm
from grace.formats.checkpoint import INDEX_FILE, CheckpointDir
from grace.formats.metadata import METADATA_FILE, FormatError, PackedMetadata
from grace.formats.names import legacy_module_names
from grace.formats.qat_sidecar import SIDECAR_BIN, SIDECAR_SAFETENSORS, module_bits, open_sidecar
from grace.formats.shards import ProgressBar, ShardWriter

OFF_GRID_TOL = 0.3  # codes; a bf16-stored grid weight is within 0.25 of its 8-bit code


@dataclass
class PackReport:
    src: Path
    dst: Path
    bits: int
    group_size: int
    n_modules: int
    bytes_before: int
    bytes_after: int
    max_code_error: int
    seconds: float
    group_size_overrides: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.bytes_before / max(1, self.bytes_after)


# The writer and progress bar live in grace.formats.shards (shared with grace export).
_ShardWriter = ShardWriter
_progress = ProgressBar


def grid_codes(weight: torch.Tensor, log_scale: torch.Tensor, bits: int,
               name: str = "?") -> tuple[torch.Tensor, torch.Tensor, int]:
    """Exact codes of a QAT grid weight: ``(codes int8 (out, in), fp16-valued scale grid fp32, g)``.

        codes, s16, g = grid_codes(side[f"{n}.weight"], side[f"{n}.log_scale"], 4, n)

    Codes are ``round(weight / fp16(exp(log_scale)))``; they equal the fp32-scale codes for a grid
    weight, and ``codes * s16`` reproduces the fp16-scale fake quantisation exactly. A weight more
    than ``OFF_GRID_TOL`` codes from its grid, or codes outside the ``bits`` range, are refused.
    """
    out_f, in_f = weight.shape
    n = log_scale.numel()
    if n == 0 or n % out_f or in_f % (n // out_f):
        raise FormatError(f"{name}: log_scale has {n} entries, not out*in/g for weight {tuple(weight.shape)}")
    g = in_f // (n // out_f)
    scales = numerics.scales_from_log(log_scale, out_f)
    s16 = scales.to(torch.float16).float()
    ratio = weight.float().reshape(out_f, -1, g) / s16.unsqueeze(-1)
    codes_f = torch.round(ratio)
    off = float((ratio - codes_f).abs().max()) if ratio.numel() else 0.0
    qmin, qmax = numerics.qrange(bits)
    lo, hi = (int(codes_f.min()), int(codes_f.max())) if codes_f.numel() else (0, 0)
    if off > OFF_GRID_TOL:
        raise FormatError(f"{name}.weight is not on its quantization grid (max off-grid distance {off:.3f} codes)")
    if lo < qmin or hi > qmax:
        raise FormatError(f"{name}.weight has codes in [{lo}, {hi}], outside the {bits}-bit range [{qmin}, {qmax}]")
    return codes_f.reshape(out_f, in_f).to(torch.int8), s16, g


def pack_module(weight: torch.Tensor, log_scale: torch.Tensor, bits: int, name: str = "?",
                verify: bool = True) -> tuple[dict[str, torch.Tensor], int, int]:
    """Pack one quantized linear. Returns ``(packed tensors, group_size, max code error)``."""
    codes, s16, g = grid_codes(weight, log_scale, bits, name)
    out_f = weight.shape[0]
    if bits == 4 and out_f % 8:
        raise FormatError(f"{name}: out_features {out_f} is not divisible by 8 (AWQ W4 needs it)")
    packed = awq_gemm.pack(codes, s16, bits, g)
    err = 0
    if verify:
        codes2, s2, g2 = awq_gemm.unpack(packed, bits)
        err = 0 if torch.equal(codes2, codes) else int((codes2.to(torch.int16) - codes.to(torch.int16)).abs().max())
        if g2 != g or not torch.equal(s2.float(), s16):
            raise FormatError(f"{name}: scale verification failed after packing")
    return packed, g, err


def pack_checkpoint(src: str | Path, dst: str | Path, *, bits: int | None = None, dtype: torch.dtype | None = None,
                    shard_bytes: int = 2 << 30, verify: bool = True, progress: bool = True) -> PackReport:
    """Pack the QAT checkpoint ``src`` into a new directory ``dst``; returns a :class:`PackReport`."""
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FormatError(f"{dst}: destination already exists (refusing to overwrite)")
    ckpt = CheckpointDir.open(src)
    if ckpt.form != "qat":
        raise FormatError(f"{src}: not a QAT checkpoint (form {ckpt.form!r}; expected dense grid weights + "
                          f"{SIDECAR_SAFETENSORS} or {SIDECAR_BIN})")
    side = open_sidecar(src)
    modules = side.module_names()
    if not modules:
        raise FormatError(f"{side.path}: the sidecar lists no quantized module")
    index = ckpt.index()
    # sidecar module name -> the same module's name in the weight files (they differ when a
    # trainer wrote runtime names but transformers saved its legacy Llava key layout)
    to_ckpt = {name: _weight_name(name, index, side.path) for name in modules}
    for name, cname in to_ckpt.items():
        shp = index[f"{cname}.weight"].shape
        sshape = tuple(side[f"{name}.weight"].shape)
        if shp != sshape:
            raise FormatError(f"{name}.weight: shape {shp} in the model but {sshape} in the sidecar")
    if bits is None:
        bits = module_bits(src, side, modules[0])
    if bits not in (4, 8):
        raise FormatError(f"{src}: bits must be 4 or 8 to pack; got {bits}")

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        writer = ShardWriter(tmp, shard_bytes)
        from_ckpt = {c: n for n, c in to_ckpt.items()}
        group_sizes: dict[str, int] = {}
        max_err = 0
        bar = ProgressBar(progress, len(index))
        for key in sorted(index):
            name, _, leaf = key.rpartition(".")
            if name in from_ckpt and leaf == "weight":
                sname = from_ckpt[name]
                packed, g, err = pack_module(side[f"{sname}.weight"], side[f"{sname}.log_scale"], bits, name, verify)
                max_err = max(max_err, err)
                group_sizes[name] = g
                for k, v in packed.items():
                    writer.add(f"{name}.{k}", v)
            elif name in from_ckpt and leaf == "bias":
                writer.add(key, ckpt.get(key).to(torch.float16))
            else:
                t = ckpt.get(key)
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                writer.add(key, t)
            bar.advance()
        bar.close()
        for name, cname in to_ckpt.items():  # a biased module whose bias lives only in the sidecar
            if f"{name}.bias" in side and f"{cname}.bias" not in index:
                writer.add(f"{cname}.bias", side[f"{name}.bias"].to(torch.float16))
        writer.finish()
        bytes_after = writer.total
        if max_err != 0:
            raise FormatError(f"{src}: verification failed: max int-code error {max_err} after pack -> unpack")

        common = Counter(group_sizes.values()).most_common(1)[0][0]
        overrides = {n: g for n, g in group_sizes.items() if g != common}
        meta = PackedMetadata(bits, common, [to_ckpt[n] for n in modules], overrides)
        meta.save(tmp)
        _copy_side_files(src, tmp, ckpt.weight_files)
        cfg = dict(ckpt.config)
        cfg.pop("quantization_config", None)
        if isinstance(cfg.get("text_config"), dict):
            cfg["text_config"] = {k: v for k, v in cfg["text_config"].items() if k != "quantization_config"}
        cfg["awq_packing"] = meta.config_block()
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PackReport(src, dst, bits, common, len(modules), ckpt.total_bytes(),
                      bytes_after, max_err, time.perf_counter() - t0, overrides)


def _weight_name(name: str, index: dict, source) -> str:
    """The module name under which ``name``'s weight is stored in the checkpoint's files."""
    if f"{name}.weight" in index:
        return name
    for other in legacy_module_names(name):
        if f"{other}.weight" in index:
            return other
    raise FormatError(f"{source}: module {name!r} is absent from the model weights ({name}.weight not found)")


def _copy_side_files(src: Path, dst: Path, weight_files: list[Path]) -> None:
    skip = {p.name for p in weight_files} | {INDEX_FILE, "config.json", SIDECAR_BIN, SIDECAR_SAFETENSORS, METADATA_FILE}
    for p in src.iterdir():
        if p.name in skip or p.name.startswith("."):
            continue
        if p.is_dir():
            shutil.copytree(p, dst / p.name)
        else:
            shutil.copy2(p, dst / p.name)


