"""Writing checkpoints: dense, QAT (grid weights + sidecar) and packed, in either layout.

    grace.io.save_checkpoint(model, tok, proc, "out", layout="hf")          # dense or QAT
    grace.io.save_packed(model, tok, proc, "out-awq", layout="original")    # real packed tensors

Invariants:

* Atomic: everything is written into a temporary sibling directory that is renamed into place
  at the end, so a crash never leaves a half-written checkpoint under the final name.
* Names on disk are the checkpoint's own naming (:mod:`grace.models.families`): the original
  LLaVA names for ``layout="original"``, the names transformers 5.23 ``save_pretrained`` writes
  for ``layout="hf"``. The sidecar, ``awq_quantized_modules.json`` and packed tensor names use
  that same naming.
* A model with :class:`~grace.quant.modules.QATLinear` modules is **baked in place** first
  (its weights become their fake-quantized values), then written as a QAT checkpoint: dense grid
  weights, the sidecar (``NAME.weight``, ``NAME.log_scale``, ``NAME.bias``) and
  ``grace_quant.json`` (the QuantSpec). Continuing to train a baked model is fine.
* Packed directory (the layout ``grace pack`` writes too): ``model.safetensors`` holding
  ``<module>.qweight`` / ``.qzeros`` (W4) / ``.scales`` / ``.bias`` for quantized linears and
  fp16 tensors for everything else, ``awq_quantized_modules.json``, and config.json without any
  ``quantization_config`` but with ``"awq_packing": {bits, group_size, zero_point, version}``.
* ``layout="original"`` (LLaVA only) writes the CLIP tower to ``<out>/clip`` as a CLIP checkpoint
  (``vision_model.*`` keys, CLIPConfig-style config.json, CLIP preprocessor_config.json) and
  sets ``mm_vision_tower: "clip"`` (resolved against the checkpoint directory by grace.load),
  unless ``vision_tower=`` names an existing CLIP location to reference instead.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from grace.config import QuantSpec
from grace.errors import GraceError
from grace.formats import qat_sidecar
from grace.formats.awq_gemm import packed_tensor_names
from grace.formats.metadata import PackedMetadata
from grace.formats.safetensors import write_sharded
from grace.models import families as F
from grace.quant.api import bake, packed_modules, qat_modules
from grace.quant.modules import PackedLinear, QATLinear

CLIP_SUBDIR = "clip"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class _Atomic:
    """Write into ``.<name>.tmp-XXXX`` next to ``out``; rename into place on success."""

    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def _unbundle(model, tokenizer, processor, family):
    if hasattr(model, "model") and hasattr(model, "tokenizer") and hasattr(model, "family"):
        vlm = model
        return vlm.model, tokenizer or vlm.tokenizer, processor or vlm.processor, family or vlm.family
    return model, tokenizer, processor, family


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Persistent tensors by runtime name, without QAT log-scales; a tied head is written once."""
    sd = model.state_dict()
    out = {k: v for k, v in sd.items() if not k.endswith(".log_scale")}
    if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" in out:
        del out["lm_head.weight"]  # as save_pretrained does
    return out


def _write_tokenizer(tokenizer, d: Path, family: str) -> None:
    if tokenizer is None:
        return
    tokenizer.save_pretrained(str(d))
    if family == "llava":
        sp = getattr(tokenizer, "grace_sp_model", None)
        vf = getattr(tokenizer, "vocab_file", None)
        if sp is not None:
            (d / "tokenizer.model").write_bytes(sp)
        elif vf and Path(vf).is_file():
            shutil.copyfile(vf, d / "tokenizer.model")
        st = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
              if getattr(tokenizer, k, None) is not None}
        (d / "special_tokens_map.json").write_text(json.dumps({k: str(v) for k, v in st.items()}, indent=2))


def _write_generation_config(config, tokenizer, d: Path, family: str) -> None:
    t = config.get_text_config()
    g = {"bos_token_id": getattr(t, "bos_token_id", None), "do_sample": False}
    if family == "qwen3vl" and tokenizer is not None:
        g["eos_token_id"] = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
        g["pad_token_id"] = tokenizer.pad_token_id
    else:
        g["eos_token_id"] = getattr(t, "eos_token_id", None) or (tokenizer.eos_token_id if tokenizer else 2)
        g["pad_token_id"] = getattr(t, "pad_token_id", None) if getattr(t, "pad_token_id", None) is not None else 0
    (d / "generation_config.json").write_text(json.dumps({k: v for k, v in g.items() if v is not None}, indent=2))


def _dtype_name(model: nn.Module) -> str:
    c = Counter(p.dtype for p in model.parameters() if p.is_floating_point())
    dt = c.most_common(1)[0][0] if c else torch.float32
    return str(dt).replace("torch.", "")


def _write_config(model, d: Path, *, layout: str, family: str, mm_vision_tower: str, dtype_name: str,
                  extra: dict | None = None) -> None:
    cfg = model.config
    if layout == "original":
        js = F.original_config_from_llava(cfg, mm_vision_tower=mm_vision_tower, torch_dtype=dtype_name, extra=extra)
    else:
        js = cfg.to_dict()
        js["dtype"] = dtype_name
        js.pop("quantization_config", None)
        if extra:
            js.update(extra)
    (d / "config.json").write_text(json.dumps(js, indent=2, sort_keys=True))


def _write_clip_dir(model, processor, d: Path, tensors: dict[str, torch.Tensor]) -> None:
    cd = d / CLIP_SUBDIR
    cd.mkdir()
    vt = {F.runtime_to_clip(k): v for k, v in tensors.items() if k.startswith("model.vision_tower.")}
    write_sharded(cd, vt)
    (cd / "config.json").write_text(json.dumps(F.clip_dir_config(model.config.vision_config), indent=2))
    mean = getattr(processor, "image_mean", None) or F.CLIP_MEAN
    std = getattr(processor, "image_std", None) or F.CLIP_STD
    size = model.config.vision_config.image_size
    (cd / "preprocessor_config.json").write_text(json.dumps(F.clip_preprocessor_config(size, mean, std), indent=2))


def _check_layout(layout: str, family: str) -> None:
    if layout not in ("hf", "original"):
        raise GraceError(f"layout must be 'hf' or 'original'; got {layout!r}")
    if layout == "original" and family != "llava":
        raise GraceError("layout='original' exists for LLaVA-1.5 only; Qwen3-VL is saved in the hf layout")


def _disk_tensors(tensors: dict[str, torch.Tensor], family: F.Family, layout: str) -> dict[str, torch.Tensor]:
    fn = F.to_disk_fn(family, layout)
    out = {}
    for k, v in tensors.items():
        dk = fn(k)
        if dk is not None:
            out[dk] = v
    return out


def _spec_of(mods: dict[str, QATLinear]) -> QuantSpec:
    bits = {m.bits for m in mods.values()}
    gs = Counter(m.requested_group_size for m in mods.values())
    sds = {str(m.scale_dtype).replace("torch.", "") for m in mods.values()}
    if len(bits) != 1 or len(sds) != 1:
        raise GraceError(f"QAT modules mix bit widths {sorted(bits)} or scale dtypes {sorted(sds)}; cannot write one spec")
    return QuantSpec(bits=bits.pop(), group_size=gs.most_common(1)[0][0], scale_dtype=sds.pop())


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def save_checkpoint(model, tokenizer, processor, out_dir: str | Path, *, layout: str = "hf",
                    family: str | None = None, vision_tower: str = "copy") -> Path:
    """Write a dense or QAT checkpoint (QAT when the model has QATLinear modules; baked in place).

        save_checkpoint(model, tok, proc, "runs/x/final", layout="original", family="llava")

    A model holding PackedLinear modules is written packed (:func:`save_packed`).
    """
    model, tokenizer, processor, family = _unbundle(model, tokenizer, processor, family)
    fam = F.get_family(family or model)
    _check_layout(layout, fam.name)
    if packed_modules(model):
        return save_packed(model, tokenizer, processor, out_dir, layout=layout, family=fam.name,
                           vision_tower=vision_tower)
    qmods = qat_modules(model)
    if qmods:
        bake(model)
    tensors = _state(model)
    with _Atomic(out_dir) as d:
        mm = _write_body(model, tokenizer, processor, d, fam, layout, tensors, vision_tower)
        if qmods:
            to_disk = F.to_disk_fn(fam, layout)
            sidecar = {}
            for name, m in qmods.items():
                dn = F.map_module_name(to_disk, name)
                sidecar[f"{dn}.weight"] = m.weight.detach()
                sidecar[f"{dn}.log_scale"] = m.log_scale.detach().float()
                if m.bias is not None:
                    sidecar[f"{dn}.bias"] = m.bias.detach()
            qat_sidecar.save_sidecar(d, sidecar)
            qat_sidecar.save_spec(d, _spec_of(qmods).to_dict())
        _write_config(model, d, layout=layout, family=fam.name, mm_vision_tower=mm, dtype_name=_dtype_name(model))
    return Path(out_dir)


def _write_body(model, tokenizer, processor, d: Path, fam: F.Family, layout: str,
                tensors: dict[str, torch.Tensor], vision_tower: str) -> str:
    """Weights (+ CLIP dir), tokenizer, processor, generation config; returns mm_vision_tower."""
    mm = ""
    if layout == "original":
        if vision_tower == "copy":
            _write_clip_dir(model, processor, d, tensors)
            mm = CLIP_SUBDIR
        else:
            mm = vision_tower
    write_sharded(d, _disk_tensors(tensors, fam, layout))
    _write_tokenizer(tokenizer, d, fam.name)
    if processor is not None and layout == "hf":
        processor.save_pretrained(str(d))
    _write_generation_config(model.config, tokenizer, d, fam.name)
    return mm


@torch.no_grad()
def to_packed(model: nn.Module) -> list[str]:
    """Replace every QATLinear by a PackedLinear holding its exact codes and fp16 scales (in place).

    The codes are the fake-quant forward's own (``QATLinear.codes()``, with the scales the
    forward uses), so the packed model computes the fake-quant model's weights exactly.
    """
    names = []
    for name, m in list(qat_modules(model).items()):
        codes = m.codes()
        scales = m.scales()
        p = PackedLinear.from_codes(codes, scales, m.bits, m.group_size,
                                    None if m.bias is None else m.bias.detach())
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, leaf, p)
        names.append(name)
    return names


@torch.no_grad()
def save_packed(model, tokenizer, processor, out_dir: str | Path, *, layout: str = "hf",
                family: str | None = None, dense_dtype: torch.dtype = torch.float16,
                vision_tower: str = "copy") -> Path:
    """Write a packed checkpoint (W4 AWQ GEMM / grace W8) from a QAT or packed model.

        save_packed(vlm, None, None, "out-awq", layout="original")

    QAT modules are converted with their exact codes; every other floating tensor is stored in
    ``dense_dtype`` (fp16, as the published AWQ build). The in-memory model is not modified.
    """
    model, tokenizer, processor, family = _unbundle(model, tokenizer, processor, family)
    fam = F.get_family(family or model)
    _check_layout(layout, fam.name)
    qmods = qat_modules(model)
    pmods = packed_modules(model)
    if not qmods and not pmods:
        raise GraceError("save_packed: the model has no QATLinear or PackedLinear modules (quantize it first)")
    packed: dict[str, dict[str, torch.Tensor]] = {}
    info: dict[str, tuple[int, int, int]] = {}  # name -> bits, group_size, in_features
    for name, m in qmods.items():
        p = PackedLinear.from_codes(m.codes(), m.scales(), m.bits, m.group_size,
                                    None if m.bias is None else m.bias.detach())
        packed[name] = {k: getattr(p, k) for k in packed_tensor_names(m.bits)}
        if m.bias is not None:
            packed[name]["bias"] = p.bias
        info[name] = (m.bits, m.group_size, m.in_features)
    for name, m in pmods.items():
        packed[name] = dict(m.packed_tensors())
        if m.bias is not None:
            packed[name]["bias"] = m.bias.to(torch.float16)
        info[name] = (m.bits, m.group_size, m.in_features)
    bits = {b for b, _, _ in info.values()}
    if len(bits) != 1:
        raise GraceError(f"save_packed: modules mix bit widths {sorted(bits)}")
    bit = bits.pop()
    g_main = Counter(g for _, g, _ in info.values()).most_common(1)[0][0]

    tensors: dict[str, torch.Tensor] = {}
    for k, v in _state(model).items():
        mod, _, leaf = k.rpartition(".")
        if mod in packed:
            continue  # replaced below
        tensors[k] = v.to(dense_dtype) if v.is_floating_point() else v
    for name, parts in packed.items():
        for leaf, v in parts.items():
            tensors[f"{name}.{leaf}"] = v

    to_disk = F.to_disk_fn(fam, layout)
    disk_names = {name: F.map_module_name(to_disk, name) for name in packed}
    overrides = {disk_names[n]: g for n, (_, g, _) in info.items() if g != g_main}
    meta = PackedMetadata(bit, g_main, [disk_names[n] for n in packed], overrides)
    with _Atomic(out_dir) as d:
        mm = _write_body(model, tokenizer, processor, d, fam, layout, tensors, vision_tower)
        meta.save(d)
        _write_config(model, d, layout=layout, family=fam.name, mm_vision_tower=mm,
                      dtype_name=str(dense_dtype).replace("torch.", ""),
                      extra={"awq_packing": meta.config_block()})
    return Path(out_dir)
