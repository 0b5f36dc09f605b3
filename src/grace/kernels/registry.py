"""Backend registry: one matmul backend is chosen per :class:`PackedLinear`, once, at attach time.

Invariant: :func:`attach` never changes a module's published buffers (``qweight``, ``qzeros``,
``scales``, ``bias``); a backend may only cache a converted layout in ``module._kernel_state``
(a plain dict, so it is not part of the state dict). Re-attaching (for example after moving the
model to another device) clears that cache first.

Why choose once: the forward then makes exactly one call into the chosen backend with no
run-time dispatch on shapes or availability, which keeps ``torch.compile`` graphs free of breaks
and makes "which kernel ran?" answerable by :func:`describe`.

Selection order for a module: the explicit ``backend`` argument, else the ``GRACE_KERNEL``
environment variable, else the first backend in the preference list for the module's
(bits, device, activation dtype) that is available in this process and supports its shape.
``reference`` supports everything, so the automatic choice always succeeds.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from grace.errors import GraceError
from grace.quant.modules import PackedLinear

ENV_VAR = "GRACE_KERNEL"


class KernelError(GraceError, RuntimeError):
    """An unknown or unusable kernel backend was requested, or a module's kernel cache is stale."""


class Backend:
    """A matmul implementation for packed linears.

    Subclasses set ``name``, ``bits`` (widths handled), ``devices`` (device types) and
    ``compute_dtype`` (None: the activation dtype; else the dtype the kernel computes in, which
    sets its accuracy), and override :meth:`is_available`, :meth:`supports`, :meth:`prepare`
    and :meth:`forward`.
    """

    name: str = "?"
    bits: tuple[int, ...] = (4, 8)
    devices: tuple[str, ...] = ("cpu", "cuda")
    compute_dtype: torch.dtype | None = None

    def is_available(self, device: torch.device) -> bool:
        """Whether this process can run the backend on ``device`` (libraries, ISA, GPU arch)."""
        return device.type in self.devices

    def unavailable_reason(self, device: torch.device) -> str:
        return f"it does not run on {device.type}"

    def supports(self, module: PackedLinear) -> bool:
        """Whether the module's shape / group size fits the kernel's constraints."""
        return module.bits in self.bits

    def prepare(self, module: PackedLinear) -> None:
        """Fill ``module._kernel_state`` with any cached layout (never touches the buffers)."""

    def forward(self, module: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<grace kernel backend {self.name!r}>"


_REGISTRY: dict[str, Backend] = {}
# Preference lists: (bits, device type, activation dtype or None for "any") -> backend names.
# Filled by the backend modules; the first available + supporting entry wins; "reference" last.
_PREFERENCE: dict[tuple[int, str], Callable[[torch.dtype], list[str]]] = {}


def register(backend: Backend) -> Backend:
    """Add a backend instance to the registry (name must be unique)."""
    if backend.name in _REGISTRY:
        raise ValueError(f"kernel backend {backend.name!r} registered twice")
    _REGISTRY[backend.name] = backend
    return backend


def set_preference(bits: int, device_type: str, order: Callable[[torch.dtype], list[str]]) -> None:
    """Set the automatic-choice order for (bits, device type) as a function of activation dtype."""
    _PREFERENCE[(bits, device_type)] = order


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The registered backend called ``name`` (KernelError listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KernelError(f"unknown kernel backend {name!r}; known: {', '.join(_REGISTRY)}") from None


def _as_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def available_backends(bits: int, device="cpu", dtype: torch.dtype = torch.bfloat16) -> list[str]:
    """Backends able to run ``bits``-bit modules on ``device``, best first: ``available_backends(4, "cpu")``."""
    dev = _as_device(device)
    order = _PREFERENCE.get((bits, dev.type), lambda _dt: [])(dtype)
    names = [n for n in order if n in _REGISTRY]
    names += [n for n in _REGISTRY if n not in names]  # the rest (reference, dequant) after
    return [n for n in names if bits in _REGISTRY[n].bits and _REGISTRY[n].is_available(dev)]


def _model_dtype(model: nn.Module) -> torch.dtype:
    """Activation dtype to plan for: the first floating parameter's, else the default dtype."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _choose(module: PackedLinear, name: str, requested: str | None, dtype: torch.dtype) -> Backend:
    dev = module.qweight.device
    if requested is not None:
        b = get_backend(requested)
        if module.bits not in b.bits:
            raise KernelError(f"kernel backend {requested!r} does not handle {module.bits}-bit modules "
                              f"(module {name!r}); it handles bits {b.bits}")
        if not b.is_available(dev):
            raise KernelError(f"kernel backend {requested!r} is not available for module {name!r}: "
                              f"{b.unavailable_reason(dev)}")
        if not b.supports(module):
            raise KernelError(f"kernel backend {requested!r} cannot run module {name!r} "
                              f"(in={module.in_features}, out={module.out_features}, group={module.group_size})")
        return b
    for n in available_backends(module.bits, dev, dtype):
        b = _REGISTRY[n]
        if b.supports(module):
            return b
    return _REGISTRY["reference"]  # pragma: no cover - reference supports every module


def attach(model_or_module: nn.Module, backend: str | None = None, *, dtype: torch.dtype | None = None) -> str:
    """Choose and prepare a kernel backend for every PackedLinear: ``grace.kernels.attach(model)``.

    ``backend`` (or ``$GRACE_KERNEL``; ``"auto"`` or empty means automatic) forces one backend
    for all modules. ``dtype`` is the activation dtype to plan for (default: the model's first
    floating parameter's dtype). Returns the chosen name, or ``"a+b"`` if modules differ.
    """
    requested = backend if backend is not None else os.environ.get(ENV_VAR) or None
    if requested == "auto":
        requested = None
    if requested is not None:
        get_backend(requested)  # fail fast on a typo, before touching any module
    dt = dtype or _model_dtype(model_or_module)
    chosen: Counter[str] = Counter()
    mods = [(n, m) for n, m in model_or_module.named_modules() if isinstance(m, PackedLinear)]
    for name, mod in mods:
        b = _choose(mod, name or type(mod).__name__, requested, dt)
        mod._kernel_state = {}
        b.prepare(mod)
        mod._kernel_state["device"] = mod.qweight.device
        mod.backend = b
        chosen[b.name] += 1
    return "+".join(chosen) if chosen else "none"


def describe(model: nn.Module) -> str:
    """Which backend runs the packed modules, e.g. ``"int4-cpu (224 modules)"``."""
    counts: Counter[str] = Counter()
    for m in model.modules():
        if isinstance(m, PackedLinear):
            counts[getattr(m.backend, "name", None) or "reference (not attached)"] += 1
    if not counts:
        return "no packed modules"
    return ", ".join(f"{n} ({c} module{'s' if c != 1 else ''})" for n, c in counts.most_common())


def check_device(module: PackedLinear, x: torch.Tensor) -> None:
    """Raise a clear error if the module moved since attach (its cached layout is stale)."""
    if x.device != module._kernel_state.get("device", x.device):
        raise KernelError(
            f"packed module was prepared for {module._kernel_state['device']} but called on {x.device}; "
            "call grace.kernels.attach(model) again after moving the model"
        )
