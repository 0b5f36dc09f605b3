"""``grace.load``: any supported checkpoint directory -> a ready :class:`~grace.models.VLM`.

Layouts (detected from the files, never from the directory name):

=====================  ==============================================================
LLaVA-1.5 original     config.json has ``mm_vision_tower``; CLIP from ``vision_tower=``
                       or from ``mm_vision_tower`` when that is a local directory
                       (relative paths resolve against the checkpoint directory)
transformers Llava     config.json ``model_type: llava`` with ``text_config``
transformers Qwen3-VL  config.json ``model_type: qwen3_vl``
=====================  ==============================================================

Forms: dense; QAT (grid weights + ``qat_quantized_weights.{safetensors,bin}`` sidecar) loaded
as real :class:`PackedLinear` modules (``qat_as="packed"``, codes recovered exactly with
``codes_from_grid_weight``) or as :class:`QATLinear` fake-quant modules for further training
(``qat_as="fake"``); packed (``awq_quantized_modules.json``: W4 AWQ GEMM or grace W8); the standard exports of
``grace export`` (config.json ``quantization_config``): compressed-tensors ``pack-quantized``
(W4/W8; each module's ``weight_packed`` / ``weight_scale`` / ``weight_shape`` is unpacked to its
integer codes and repacked into the PackedLinear layout, codes unchanged) and AWQ GEMM (W4; its
tensors already are that layout). ``suppress_tokens`` of generation_config.json is applied to
generation (the rows a LLaVA export adds for ``<image>`` / ``<pad>`` are never emitted).

How (the meta way, STYLE.md): the model is built with parameters on the ``meta`` device and
real computed buffers (``init_empty_weights(include_buffers=False)``: rotary ``inv_freq`` and
CLIP ``position_ids`` are therefore computed, never left on meta); quantized linears are
swapped for their modules while still on meta; then each tensor is read from disk on its own
(:mod:`grace.formats.safetensors`, :class:`grace.io.tensors.WeightSource`), checked (shape, dtype) and assigned in place. Nothing dense is built
for a packed model, so peak memory stays close to the packed size. Every inconsistency is one
:class:`GraceError` naming the file and the tensor or field.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from grace import numerics
from grace.errors import GraceError
from grace.formats import awq_gemm, awq_hf, qat_sidecar
from grace.formats import compressed_tensors as CT
from grace.formats.awq_gemm import PACK_VERSION_W4, PACK_VERSION_W8
from grace.formats.metadata import METADATA_FILE, FormatError, PackedMetadata
from grace.io.tensors import WeightSource
from grace.models import families as F
from grace.models.vlm import VLM
from grace.quant.modules import PackedLinear, QATLinear

try:  # the kernels are written in parallel; before they land PackedLinear uses its reference path
    from grace.kernels import attach
except ImportError:  # pragma: no cover - depends on the merge state
    attach = None

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "half": torch.float16}


STANDARD_FORMS = (CT.QUANT_METHOD, awq_hf.QUANT_METHOD)  # "compressed-tensors", "awq": `grace export` output


class LoadError(GraceError, ValueError):
    """A checkpoint that cannot be loaded as it is; the message names the file and tensor/field."""


def _read_json(p: Path) -> dict:
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise LoadError(f"{p}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise LoadError(f"{p}: expected a JSON object")
    return d


def _as_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).replace("torch.", "")]
    except KeyError:
        raise GraceError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None


def detect_layout(d: Path, cfg: dict) -> tuple[F.Family, str]:
    """``(family, "original" | "hf")`` from config.json fields."""
    if "mm_vision_tower" in cfg:
        return F.LLAVA, "original"
    mt = cfg.get("model_type")
    if mt == "llava" and "text_config" in cfg:
        return F.LLAVA, "hf"
    if mt == "qwen3_vl":
        return F.QWEN3VL, "hf"
    raise LoadError(
        f"{d / 'config.json'}: unknown layout (field model_type={mt!r}, no mm_vision_tower); grace loads "
        "LLaVA-1.5 (original or transformers layout) and Qwen3-VL checkpoints"
    )


def detect_form(d: Path, cfg: dict) -> str:
    """``"packed"``, ``"compressed-tensors"``, ``"awq"`` (standard exports), ``"qat"`` or ``"dense"``."""
    if (d / METADATA_FILE).is_file():
        return "packed"
    if "awq_packing" in cfg:
        raise LoadError(f"{d / 'config.json'}: field awq_packing says packed, but {METADATA_FILE} is missing")
    if "quantization_config" in cfg:
        qc = cfg["quantization_config"]
        qm = qc.get("quant_method") if isinstance(qc, dict) else None
        if qm in (CT.QUANT_METHOD, awq_hf.QUANT_METHOD):
            return qm
        raise LoadError(
            f"{d / 'config.json'}: field quantization_config (quant_method={qm!r}) marks a checkpoint for "
            "transformers' own quantizers; grace reads compressed-tensors pack-quantized and AWQ GEMM ones. "
            "Load it with transformers, or give grace its dense/QAT/packed form"
        )
    if qat_sidecar.sidecar_path(d) is not None:
        return "qat"
    if (d / qat_sidecar.SPEC_FILE).is_file():
        raise LoadError(f"{d / qat_sidecar.SPEC_FILE}: says QAT checkpoint, but the sidecar "
                        f"({qat_sidecar.SIDECAR_SAFETENSORS} or {qat_sidecar.SIDECAR_BIN}) is missing")
    return "dense"


def _resolve_clip_dir(d: Path, cfg: dict, vision_tower) -> Path:
    if vision_tower is not None:
        p = Path(vision_tower)
        if not p.is_dir():
            raise LoadError(f"vision tower directory {p} does not exist")
        return p
    mm = str(cfg.get("mm_vision_tower") or "")
    for cand in (d / mm, Path(mm)) if mm else ():
        if cand.is_dir():
            return cand
    raise LoadError(
        f"{d / 'config.json'}: field mm_vision_tower={mm!r} is not a local directory; pass vision_tower=DIR "
        "(CLI: --vision-tower DIR) pointing to the CLIP checkpoint (e.g. a local copy of "
        "openai/clip-vit-large-patch14-336)"
    )


def _build_config(d: Path, cfg: dict, fam: F.Family, layout: str, clip_dir: Path | None):
    cfg = {k: v for k, v in cfg.items() if k not in ("awq_packing", "quantization_config")}
    try:
        if layout == "original":
            clip_cfg = _read_json(clip_dir / "config.json")
            vc = F.clip_vision_config(clip_cfg, str(clip_dir / "config.json"))
            return F.llava_config_from_original(cfg, vc, str(d / "config.json"))
        if fam.name == "llava":
            from transformers import LlavaConfig

            return LlavaConfig.from_dict(cfg)
        from transformers import Qwen3VLConfig

        return Qwen3VLConfig.from_dict(cfg)
    except GraceError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise LoadError(f"{d / 'config.json'}: cannot build the {fam.name} config ({e})") from None


def _load_tokenizer(d: Path, fam: F.Family):
    import warnings

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer peeks at config.json; its warnings about the
    try:  # original LLaVA model_type are noise here (we never build the config from it)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            tok = AutoTokenizer.from_pretrained(str(d))
    except Exception as e:  # noqa: BLE001 - any tokenizer failure becomes one line
        raise LoadError(f"{d}: cannot load the tokenizer files ({str(e).splitlines()[0][:200]})") from None
    finally:
        hf_logging.set_verbosity(level)
    sp = d / "tokenizer.model"
    if fam.name == "llava" and sp.is_file():
        tok.grace_sp_model = sp.read_bytes()  # so a re-save in the original layout keeps it
    if tok.pad_token_id is None:
        if fam.name == "llava" and tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        elif fam.name == "qwen3vl":
            tok.pad_token = "<|endoftext|>"
        else:
            tok.pad_token = tok.eos_token
    return tok


def _load_processor(d: Path, fam: F.Family, layout: str, clip_dir: Path | None, config):
    if fam.name == "llava":
        src = (clip_dir if layout == "original" else d) / "preprocessor_config.json"
        mean, std = F.CLIP_MEAN, F.CLIP_STD
        if src.is_file():
            pc = _read_json(src)
            mean, std = pc.get("image_mean", mean), pc.get("image_std", std)
        # LLaVA-1.5 always pads ("image_aspect_ratio": "pad"), at the tower's own size.
        return F.llava_image_processor(config.vision_config.image_size, mean, std)
    src = d / "preprocessor_config.json"
    pc = _read_json(src)
    keep = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
            "image_std", "do_convert_rgb", "patch_size", "temporal_patch_size", "merge_size")
    kw = {k: pc[k] for k in keep if k in pc}
    if "size" not in kw and ("min_pixels" in pc or "max_pixels" in pc):
        kw["size"] = {"shortest_edge": pc.get("min_pixels", 56 * 56), "longest_edge": pc.get("max_pixels", 28 * 28 * 1280)}
    try:
        return F.qwen_image_processor(**kw)
    except (TypeError, ValueError) as e:
        raise LoadError(f"{src}: cannot build the Qwen image processor ({e})") from None


def _skeleton(fam: F.Family, config) -> nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = fam.model_class()(config)
    return model


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _linear(model: nn.Module, runtime: str, src: Path, disk: str) -> nn.Linear:
    try:
        mod = model.get_submodule(runtime)
    except AttributeError:
        mod = None
    if not isinstance(mod, nn.Linear):
        raise LoadError(f"{src}: module {disk!r} is listed but is not a linear layer of this model")
    return mod


def _tied(fam: F.Family, config) -> bool:
    return bool(getattr(config, "tie_word_embeddings", False))


def _assign(model: nn.Module, name: str, t: torch.Tensor) -> None:
    mod_name, _, leaf = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    if leaf in mod._parameters:
        old = mod._parameters[leaf]
        mod._parameters[leaf] = nn.Parameter(t, requires_grad=old.requires_grad if old is not None else False)
    else:
        mod._buffers[leaf] = t


def load(path, *, vision_tower=None, device="cpu", dtype=None, qat_as: str = "packed", kernel=None) -> VLM:
    """Load a checkpoint directory (any layout / form above) as a VLM.

        vlm = grace.load("LLaVA-1.5-7B-GRACE-W4G128-AWQ", vision_tower="clip-vit-large-patch14-336")
    """
    if qat_as not in ("packed", "fake"):
        raise GraceError(f"qat_as must be 'packed' or 'fake'; got {qat_as!r}")
    d = Path(path)
    if not d.is_dir():
        raise LoadError(f"{d}: not a checkpoint directory")
    cfg = _read_json(d / "config.json")
    fam, layout = detect_layout(d, cfg)
    form = detect_form(d, cfg)
    clip_dir = _resolve_clip_dir(d, cfg, vision_tower) if layout == "original" else None
    config = _build_config(d, cfg, fam, layout, clip_dir)
    dt = _as_dtype(dtype)
    if dt is None:
        if form == "packed":
            dt = torch.float16
        elif form in STANDARD_FORMS:  # exports are written in fp16 or bf16; both run the packed kernels
            dt = _as_dtype(cfg.get("dtype") or cfg.get("torch_dtype") or "float16")
            dt = dt if dt in (torch.float16, torch.bfloat16) else torch.float16
        else:
            dt = _as_dtype(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    dev = torch.device(device)

    tokenizer = _load_tokenizer(d, fam)
    processor = _load_processor(d, fam, layout, clip_dir, config)
    model = _skeleton(fam, config)
    to_runtime = F.to_runtime_fn(fam, layout)
    quant = None

    # ---- swap quantized modules (still on meta) -------------------------------------------
    packed_names: dict[str, str] = {}  # runtime -> disk name
    qat_check: dict[str, torch.Tensor] = {}  # runtime -> log_scale, to cross-check checkpoint weights
    if form == "packed":
        meta = PackedMetadata.load(d)
        src = d / METADATA_FILE
        pk = cfg.get("awq_packing")
        if pk is not None:
            want = PACK_VERSION_W4 if meta.bits == 4 else PACK_VERSION_W8
            if pk.get("bits") != meta.bits or pk.get("group_size") != meta.group_size or pk.get("version", want) != want:
                raise LoadError(f"{d / 'config.json'}: field awq_packing {pk} disagrees with {METADATA_FILE} "
                                f"(bits {meta.bits}, group_size {meta.group_size})")
        if not meta.modules:
            raise LoadError(f"{src}: field 'modules' is empty")
        for disk in meta.modules:
            rn = F.map_module_name(to_runtime, disk) or disk
            lin = _linear(model, rn, src, disk)
            g = meta.group_size_of(disk)
            if lin.in_features % g:
                raise LoadError(f"{src}: group_size {g} does not divide in_features {lin.in_features} of {disk!r}")
            if meta.bits == 4 and lin.out_features % 8:
                raise LoadError(f"{src}: out_features {lin.out_features} of {disk!r} is not a multiple of 8 (W4)")
            _set_module(model, rn, PackedLinear(lin.in_features, lin.out_features, meta.bits, g,
                                                lin.bias is not None, device="meta"))
            packed_names[rn] = disk
        quant = {"bits": meta.bits, "group_size": meta.group_size,
                 "format": "awq-gemm" if meta.bits == 4 else "w8-rowmajor", "source": "packed"}
    elif form == "qat":
        side, read_side = _lazy_sidecar(d)
        sp = qat_sidecar.sidecar_path(d)
        spec = qat_sidecar.load_spec(d) or {}
        scale_dtype = {"float16": torch.float16, "float32": torch.float32}.get(spec.get("scale_dtype", "float16"),
                                                                              torch.float16)
        bits_seen, g_seen = set(), set()
        for disk, parts in side.items():
            rn = F.map_module_name(to_runtime, disk) or disk
            lin = _linear(model, rn, sp, disk)
            w, ls = read_side(f"{disk}.weight"), read_side(f"{disk}.log_scale").float()
            if tuple(w.shape) != (lin.out_features, lin.in_features):
                raise LoadError(f"{sp}: {disk}.weight has shape {tuple(w.shape)}, the model's linear is "
                                f"{(lin.out_features, lin.in_features)}")
            g = qat_sidecar.group_size_from(tuple(w.shape), ls.numel())
            bits = int(spec["bits"]) if "bits" in spec else qat_sidecar.infer_bits(w, ls)
            bits_seen.add(bits)
            g_seen.add(g)
            if qat_as == "fake":
                q = QATLinear(lin, bits, g, scale_dtype, init_scales=False)
                q.log_scale = nn.Parameter(ls.float().to(dev))
                _set_module(model, rn, q)
            else:
                codes, scales = numerics.codes_from_grid_weight(w, ls, bits, g)
                if bits == 4 and lin.out_features % 8:
                    raise LoadError(f"{sp}: {disk} has out_features {lin.out_features}, not a multiple of 8 (W4)")
                bias = read_side(f"{disk}.bias") if "bias" in parts else None
                p = PackedLinear.from_codes(codes, scales.to(scale_dtype).float(), bits, g, bias)
                for b in list(p._buffers):
                    if p._buffers[b] is not None:
                        p._buffers[b] = p._buffers[b].to(dev)
                _set_module(model, rn, p)
            qat_check[rn] = ls
        if len(bits_seen) != 1:
            raise LoadError(f"{sp}: modules use different bit widths {sorted(bits_seen)}")
        quant = {"bits": bits_seen.pop(), "group_size": max(g_seen), "format": "qat", "source": "qat",
                 "loaded_as": qat_as}
        side_weights = {F.map_module_name(to_runtime, k) or k: f"{k}.weight" for k in side}

    elif form in STANDARD_FORMS:
        ws = WeightSource(d)
        bits, g, mods = _standard_modules(d, cfg, form, model, ws, to_runtime, fam.lm_head)
        for rn, disk in mods.items():
            lin = model.get_submodule(rn)
            _set_module(model, rn, PackedLinear(lin.in_features, lin.out_features, bits, g, lin.bias is not None,
                                                device="meta"))
            packed_names[rn] = disk
        quant = {"bits": bits, "group_size": g, "format": form, "source": form}

    # ---- what we expect to load --------------------------------------------------------------
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    if _tied(fam, config):
        expected.pop(fam.lm_head + ".weight", None)
    qat_packed = form == "qat" and qat_as == "packed"
    for rn in qat_check:
        # log-scales came from the sidecar; a QAT->packed module is already complete
        leaves = ("log_scale",) + (("qweight", "qzeros", "scales", "bias") if qat_packed else ())
        for leaf in leaves:
            expected.pop(f"{rn}.{leaf}", None)
    loaded: set[str] = set()
    unexpected: list[str] = []
    ct_parts: dict[str, dict[str, torch.Tensor]] = {}  # runtime module -> the pack-quantized tensors read so far

    def take(disk_key: str, t: torch.Tensor, src: Path, rn: str | None) -> None:
        if rn is None:
            return
        mod_name, _, leaf = rn.rpartition(".")
        if form == CT.QUANT_METHOD and mod_name in packed_names and leaf in CT.TENSOR_NAMES:
            parts = ct_parts.setdefault(mod_name, {})
            parts[leaf] = t
            if len(parts) == len(CT.TENSOR_NAMES):  # one module complete: unpack, repack as PackedLinear
                for k, v in _ct_to_packed(src, packed_names[mod_name], model.get_submodule(mod_name),
                                          ct_parts.pop(mod_name)).items():
                    _assign(model, f"{mod_name}.{k}", v.to(dev))
                    loaded.add(f"{mod_name}.{k}")
            return
        if qat_packed and mod_name in qat_check and rn.endswith(".weight"):
            _cross_check(src, disk_key, t, model.get_submodule(mod_name), qat_check[mod_name])
            return
        if qat_packed and mod_name in qat_check and rn.endswith(".bias"):
            return
        if rn not in expected:
            if _tied(fam, config) and rn == fam.lm_head + ".weight":
                return
            unexpected.append(disk_key)
            return
        want = expected[rn]
        if tuple(t.shape) != tuple(want.shape):
            raise LoadError(f"{src}: tensor {disk_key!r} has shape {list(t.shape)}, the model expects "
                            f"{list(want.shape)}")
        if mod_name in packed_names:
            leaf = rn.rsplit(".", 1)[1]
            need = {"qweight": torch.int32 if want.dtype == torch.int32 else torch.int8, "qzeros": torch.int32,
                    "scales": torch.float16}.get(leaf)
            if need is not None and t.dtype != need:
                raise LoadError(f"{src}: tensor {disk_key!r} has dtype {t.dtype}, packed layout needs {need}")
            if leaf == "bias":
                t = t.to(torch.float16)
        elif t.is_floating_point() and not rn.endswith(".log_scale"):
            t = t.to(dt)
        _assign(model, rn, t.to(dev))
        loaded.add(rn)

    if form not in STANDARD_FORMS:
        ws = WeightSource(d)
    for key, t, src in ws.iter_tensors():
        take(key, t, src, to_runtime(key))
    if clip_dir is not None:
        cws = WeightSource(clip_dir)
        for key, t, src in cws.iter_tensors():
            take(key, t, src, F.clip_to_runtime(key))

    for mod_name, parts in ct_parts.items():
        absent = [n for n in CT.TENSOR_NAMES if n not in parts]
        raise LoadError(f"{d}: tensor {packed_names[mod_name]}.{absent[0]} is missing from the weight files "
                        f"(its {', '.join(sorted(parts))} are there)")
    if unexpected:
        more = f" (and {len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise LoadError(f"{d}: tensors not part of this {fam.name} model: {unexpected[:3]}{more}")
    missing = [k for k in expected if k not in loaded]
    if missing:
        to_disk = F.to_disk_fn(fam, layout)
        first = missing[0]
        mod_name = first.rsplit(".", 1)[0]
        if mod_name in packed_names:
            listed = d / METADATA_FILE if form == "packed" else d / "config.json"
            raise LoadError(f"{listed}: module {packed_names[mod_name]!r} is listed but its tensor "
                            f"{packed_names[mod_name]}.{first.rsplit('.', 1)[1]} is absent from the weight files")
        where = clip_dir if (clip_dir is not None and first.startswith("model.vision_tower.")) else d
        disk = F.runtime_to_clip(first) if where is clip_dir else to_disk(first)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LoadError(f"{where}: tensor {disk!r} is missing from the weight files{more}")

    # ---- finish --------------------------------------------------------------------------------
    if _tied(fam, config):
        model.lm_head.weight = model.get_input_embeddings().weight
    F.install_placeholder_embedding(model)
    if form == "qat" and qat_as == "fake":
        sp = qat_sidecar.sidecar_path(d)
        for rn, wkey in side_weights.items():
            w = read_side(wkey)
            m = model.get_submodule(rn)
            a, _ = numerics.codes_from_grid_weight(m.weight.detach().cpu(), m.log_scale.detach().cpu(), m.bits, m.group_size)
            b, _ = numerics.codes_from_grid_weight(w, m.log_scale.detach().cpu(), m.bits, m.group_size)
            if not torch.equal(a, b):
                raise FormatError(f"{sp}: {rn}.weight disagrees with the checkpoint weights "
                                  f"({int((a != b).sum())} codes differ); the sidecar belongs to another checkpoint")
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device.type == "meta":
            raise LoadError(f"{d}: tensor {name!r} was not loaded (internal: left on the meta device)")
    model.to(dev)
    model.eval()
    model.config.dtype = dt
    _apply_suppress_tokens(d, model)
    if packed_names or qat_packed:
        if attach is not None:
            attach(model, backend=kernel)
        elif kernel not in (None, "reference", "torch"):
            raise GraceError(f"kernel {kernel!r} requested but grace.kernels is not available in this build")
    return VLM(model=model, tokenizer=tokenizer, processor=processor, family=fam.name, layout=layout,
               quant=quant, path=str(d))


def _lazy_sidecar(d: Path):
    """``(grouped sidecar of shape-only tensors, read(key) -> tensor)``: one module in memory at a time.

    A QAT checkpoint's sidecar holds a dense copy of every quantized weight; reading it whole
    would double the memory of a QAT -> packed load.
    """
    from grace.formats.safetensors import SafetensorsFile

    p = qat_sidecar.sidecar_path(d)
    if p.suffix == ".safetensors":
        f = SafetensorsFile(p)
        shapes = {k: torch.empty(i.shape, dtype=i.dtype, device="meta") for k, i in f.infos.items()}
        return qat_sidecar.group_sidecar(shapes, p), f.read
    try:  # mmap: tensors stay on disk until read
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_bin raises the clear, safe error
        obj = qat_sidecar.read_bin(p)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FormatError(f"{p}: expected a dict of name -> tensor")
    return qat_sidecar.group_sidecar(obj, p), lambda k: obj[k].clone()


def _cross_check(src: Path, key: str, w: torch.Tensor, packed: PackedLinear, log_scale: torch.Tensor) -> None:
    """The checkpoint's dense grid weight must give the same codes as the sidecar."""
    codes_ckpt, _ = numerics.codes_from_grid_weight(w, log_scale, packed.bits, packed.group_size)
    codes_side, _, _ = packed.unpack()
    bad = int((codes_ckpt.to(codes_side.device) != codes_side).sum())
    if bad:
        raise FormatError(f"{src}: tensor {key!r} disagrees with the QAT sidecar ({bad} codes differ); "
                          "the sidecar belongs to another checkpoint")


def _standard_modules(d: Path, cfg: dict, form: str, model: nn.Module, ws: WeightSource, to_runtime,
                      lm_head: str) -> tuple[int, int, dict[str, str]]:
    """``(bits, group_size, {runtime module: disk module})`` of a compressed-tensors / AWQ export.

    The quantized modules are the ones whose packed tensors are in the weight files; the config's
    target / ignore rule (the one transformers applies) must agree with them, since another loader
    would otherwise build a different model from the same directory.
    """
    src = d / "config.json"
    qc = cfg["quantization_config"]
    if form == CT.QUANT_METHOD:
        scheme = CT.parse_config(qc, str(src))
        bits, g, marker = scheme.bits, scheme.group_size, "weight_packed"

        def rule(n: str) -> bool:
            return CT.quantized_by_scheme(n, scheme)
    else:
        bits, g, skip = awq_hf.parse_config(qc, str(src))
        marker = "qweight"

        def rule(n: str) -> bool:
            return not awq_hf.transformers_skips(n, skip)
    mods: dict[str, str] = {}
    for key, path in ws.keys().items():
        if not key.endswith("." + marker):
            continue
        disk = key[: -len(marker) - 1]
        rn = F.map_module_name(to_runtime, disk) or disk
        lin = _linear(model, rn, path, disk)
        if lin.in_features % g:
            raise LoadError(f"{src}: quantization_config group_size {g} does not divide in_features "
                            f"{lin.in_features} of {disk!r}")
        if bits == 4 and lin.out_features % 8:
            raise LoadError(f"{path}: out_features {lin.out_features} of {disk!r} is not a multiple of 8 (W4)")
        if not rule(rn):
            raise LoadError(f"{src}: quantization_config leaves module {rn!r} unquantized, but {path.name} holds "
                            f"its packed tensor {key!r}")
        mods[rn] = disk
    if not mods:
        raise LoadError(f"{src}: quantization_config (quant_method {form!r}) but no weight file holds a "
                        f"*.{marker} tensor")
    for n, m in model.named_modules():
        # the output head is never quantized by these formats' loaders, whatever the lists say
        if isinstance(m, nn.Linear) and n != lm_head and n not in mods and rule(n):
            raise LoadError(f"{src}: quantization_config quantizes module {n!r}, but the weight files hold no "
                            f"{marker} tensor for it")
    return bits, g, mods


def _ct_to_packed(src: Path, disk: str, mod: PackedLinear, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One module's ``pack-quantized`` tensors -> its PackedLinear buffers (codes carried over exactly)."""
    try:
        codes, scales, g = CT.unpack(parts["weight_packed"], parts["weight_scale"], parts["weight_shape"],
                                     mod.bits, disk)
    except FormatError as e:
        raise LoadError(f"{src}: {e}") from None
    if tuple(codes.shape) != (mod.out_features, mod.in_features):
        raise LoadError(f"{src}: {disk}.weight_shape is {list(codes.shape)}, the model's linear is "
                        f"{[mod.out_features, mod.in_features]}")
    if g != mod.group_size:
        raise LoadError(f"{src}: {disk}.weight_scale has {scales.shape[1]} groups per row (group size {g}); "
                        f"quantization_config says group_size {mod.group_size}")
    if not scales.is_floating_point():
        raise LoadError(f"{src}: {disk}.weight_scale has dtype {scales.dtype}; expected a float tensor")
    s16 = scales.to(torch.float16)
    # PackedLinear stores fp16 scales; a bf16 (or fp32) scale must survive that unchanged
    if not bool(torch.isfinite(s16).all()) or not torch.equal(s16.to(scales.dtype), scales):
        raise LoadError(f"{src}: {disk}.weight_scale ({scales.dtype}) is not exactly representable in float16, "
                        "which grace's packed kernels use for scales")
    try:
        return awq_gemm.pack(codes, s16.float(), mod.bits, g)
    except awq_gemm.PackError as e:
        raise LoadError(f"{src}: {disk}: {e}") from None


def _apply_suppress_tokens(d: Path, model: nn.Module) -> None:
    """Honour ``suppress_tokens`` of generation_config.json (LLaVA exports list their added rows there)."""
    p = d / "generation_config.json"
    gen = getattr(model, "generation_config", None)
    if not p.is_file() or gen is None:
        return
    ids = _read_json(p).get("suppress_tokens")
    if not ids:
        return
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise LoadError(f"{p}: field suppress_tokens must be a list of token ids; got {ids!r}")
    gen.suppress_tokens = sorted(set(ids))
