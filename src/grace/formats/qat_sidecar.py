"""The QAT sidecar: ``qat_quantized_weights.bin`` (published) and its safetensors twin (preferred).

Per quantized linear ``NAME`` (FORMATS.md §2): ``NAME.weight`` (the baked grid weight),
``NAME.log_scale`` (fp32, flat, length ``out * in / g``, group index ``o*(in/g) + i//g``) and
``NAME.bias`` when the layer has one. The sidecar is the source of truth for which modules are
quantized. ``.bin`` files are read with ``torch.load(weights_only=True)`` only: a pickle that
needs to run code is refused.

The bits of a QAT checkpoint are not stored in the published sidecar; grace writes
``grace_quant.json`` (the :class:`~grace.config.QuantSpec`) beside it, and otherwise infers them
from the codes (see :func:`infer_bits`).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from grace.formats.metadata import FormatError

SIDECAR_BIN = "qat_quantized_weights.bin"
SIDECAR_SAFETENSORS = "qat_quantized_weights.safetensors"
SPEC_FILE = "grace_quant.json"


def sidecar_path(directory: str | Path) -> Path | None:
    """The sidecar in ``directory`` (safetensors preferred), or None."""
    d = Path(directory)
    for name in (SIDECAR_SAFETENSORS, SIDECAR_BIN):
        if (d / name).is_file():
            return d / name
    return None


def save_sidecar(directory: str | Path, tensors: dict[str, torch.Tensor], *, write_bin: bool = True) -> None:
    """Write the safetensors twin and (by default) the published ``.bin``."""
    d = Path(directory)
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(clean, str(d / SIDECAR_SAFETENSORS))
    if write_bin:
        torch.save(clean, d / SIDECAR_BIN)


def read_bin(path: str | Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a torch-saved dict of tensors safely (``weights_only=True``), memory-mapped if asked.

    A file that cannot be memory-mapped (not zip-format) is read normally, still weights-only.
    """
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise FormatError(
            f"{p}: refused to load: the pickle needs to run code or build objects other than tensors "
            f"({str(e).splitlines()[0][:160]}). grace never unpickles untrusted code."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        if mmap:
            return read_bin(p)
        raise FormatError(f"{p}: not a readable torch file ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise FormatError(f"{p}: expected a dict of name -> tensor")
    return obj


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path)
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{p}: corrupt or unreadable safetensors file ({e})") from None


def load_sidecar(directory: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{module_name: {"weight", "log_scale", ["bias"]}}`` from the sidecar in ``directory``."""
    p = sidecar_path(directory)
    if p is None:
        raise FormatError(f"{Path(directory)}: no QAT sidecar ({SIDECAR_SAFETENSORS} or {SIDECAR_BIN})")
    flat = read_safetensors(p) if p.suffix == ".safetensors" else read_bin(p)
    return group_sidecar(flat, p)


def split_key(key: str, source: Path | str = "sidecar") -> tuple[str, str]:
    """``"NAME.leaf"`` -> ``(NAME, leaf)``; refuses anything but weight / log_scale / bias."""
    name, _, leaf = key.rpartition(".")
    if leaf not in ("weight", "log_scale", "bias") or not name:
        raise FormatError(f"{source}: unexpected tensor {key!r} (expected NAME.weight / NAME.log_scale / NAME.bias)")
    return name, leaf


def group_sidecar(flat: dict[str, torch.Tensor], source: Path | str = "sidecar") -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        name, leaf = split_key(key, source)
        out.setdefault(name, {})[leaf] = t
    for name, parts in out.items():
        for need in ("weight", "log_scale"):
            if need not in parts:
                raise FormatError(f"{source}: module {name!r} has no {need!r} tensor")
        w, ls = parts["weight"], parts["log_scale"]
        if w.dim() != 2:
            raise FormatError(f"{source}: {name}.weight must be 2-D; got shape {tuple(w.shape)}")
        n = ls.numel()
        if n == 0 or (w.shape[0] * w.shape[1]) % n or n % w.shape[0]:
            raise FormatError(
                f"{source}: {name}.log_scale has {n} entries, which is not out * in / g for weight {tuple(w.shape)}"
            )
    return out


def group_size_from(weight_shape: tuple[int, int], log_scale_numel: int) -> int:
    out_f, in_f = weight_shape
    return in_f // (log_scale_numel // out_f)


def save_spec(directory: str | Path, spec_dict: dict) -> None:
    (Path(directory) / SPEC_FILE).write_text(json.dumps(spec_dict, indent=2))


def load_spec(directory: str | Path) -> dict | None:
    p = Path(directory) / SPEC_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FormatError(f"{p}: not valid JSON ({e})") from None


def module_bits(directory: str | Path, side: LazySidecar, name: str) -> int:
    """Bits of a QAT checkpoint: ``grace_quant.json`` if present, else inferred from ``name``'s codes."""
    spec = load_spec(directory)
    if spec and "bits" in spec:
        return int(spec["bits"])
    return infer_bits(side[f"{name}.weight"], side[f"{name}.log_scale"])


def infer_bits(weight: torch.Tensor, log_scale: torch.Tensor) -> int:
    """Smallest of 4 / 8 whose code range holds ``round(w / s)`` for every element.

    Published checkpoints do not record bits in the sidecar; a W4 grid uses codes in [-8, 7].
    """
    s = torch.exp(log_scale.float()).reshape(weight.shape[0], -1)
    g = weight.shape[1] // s.shape[1]
    q = torch.round(weight.float().reshape(weight.shape[0], -1, g) / s.unsqueeze(-1))
    lo, hi = int(q.min()), int(q.max())
    if lo >= -8 and hi <= 7:
        return 4
    if lo >= -128 and hi <= 127:
        return 8
    raise FormatError(f"codes in [{lo}, {hi}] fit neither 4 nor 8 bits")


class LazySidecar:
    """Read-on-demand view of a sidecar: ``keys()``, ``[key]``, ``module_names()``.

    safetensors are opened lazily; a ``.bin`` is memory-mapped (``weights_only=True,
    mmap=True``), so a 7B sidecar is never fully resident.
    """

    def __init__(self, path: Path):
        self.path = path
        if path.suffix == ".safetensors":
            try:
                self._st = safe_open(str(path), framework="pt")
            except (SafetensorError, OSError) as e:
                raise FormatError(f"{path}: corrupt or unreadable safetensors file ({e})") from None
            self._keys = list(self._st.keys())
            self._dict = None
        else:
            self._dict = read_bin(path, mmap=True)
            self._keys = list(self._dict)

    def keys(self) -> list[str]:
        return self._keys

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise FormatError(f"{self.path}: no tensor {key!r}")
        return self._dict[key] if self._dict is not None else self._st.get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of ``key`` without reading its data (safetensors header / memory map)."""
        if key not in self._keys:
            raise FormatError(f"{self.path}: no tensor {key!r}")
        if self._dict is not None:
            return tuple(self._dict[key].shape)
        return tuple(self._st.get_slice(key).get_shape())

    def module_names(self) -> list[str]:
        names = []
        for k in self._keys:
            name, leaf = split_key(k, self.path)
            if leaf == "log_scale":
                names.append(name)
        for n in names:
            if f"{n}.weight" not in self._keys:
                raise FormatError(f"{self.path}: module {n!r} has a log_scale but no weight")
        return names


def open_sidecar(directory: str | Path) -> LazySidecar:
    p = sidecar_path(directory)
    if p is None:
        raise FormatError(f"{Path(directory)}: no QAT sidecar ({SIDECAR_SAFETENSORS} or {SIDECAR_BIN})")
    return LazySidecar(p)
