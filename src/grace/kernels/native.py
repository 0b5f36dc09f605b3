"""Native AVX-512 CPU kernels (``int4-avx512``, ``int8-avx512``): built once, cached, loaded as torch ops.

Invariant: the kernels read the published buffers in place (AWQ ``qweight`` for W4, the int8
``qweight`` for W8); ``module._kernel_state`` only holds fp32 copies of the group scales (and,
for W4, scale times zero) arranged for the kernel: 1/8 (W4) or 1/32 (W8) of the weight bytes
(fp16 scales and a symmetric-zero shortcut would cut W4's to 1/32; not done yet). Why a native kernel at all: torch has no group-wise int8 CPU matmul (``_weight_int8pack_mm``
is per-channel; looping it over 32 groups or splitting W8 into two int4 matmuls both measured
about 1.5x over bf16), and its int4 kernel needs a second, repacked copy of the weights.
Accumulation is fp32 with the exact fp16 scales, so these are the most accurate fast paths
(fp32 activations keep fp32 accuracy). The C++ source is ``csrc/grace_cpu.cpp``; its header
comment states the layouts.

Build: ``g++ -O3 -march=native -fopenmp`` against the installed torch's headers (about 15-30 s,
once per machine / torch version / source version), into ``$GRACE_KERNEL_CACHE`` (default
``~/.cache/grace/kernels``), under a file lock so parallel test workers build it once. The
OpenMP runtime resolves to the one torch already loaded (same soname), so the kernels share
torch's thread pool and ``torch.set_num_threads``. Set ``GRACE_NATIVE=0`` to never build; if
the compiler is missing, the build fails or the CPU lacks AVX-512 (BW+VL), the backends report
unavailable (with the reason) and attach falls back to torch's kernels.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from grace.formats.awq_gemm import AWQ_ORDER, unpack_nibbles
from grace.kernels.registry import Backend, check_device, register
from grace.quant.modules import PackedLinear

SOURCE = Path(__file__).with_name("csrc") / "grace_cpu.cpp"
_STATE: dict = {"loaded": False, "error": None}


def cache_dir() -> Path:
    env = os.environ.get("GRACE_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "grace" / "kernels"


def _cpu_id() -> str:
    """The CPU's feature flags: ``-march=native`` code is only valid on a CPU with the same ones."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compile_command(cxx: str, out: Path) -> list[str]:
    from torch.utils import cpp_extension

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    inc = [f"-I{p}" for p in cpp_extension.include_paths()]
    libdirs = cpp_extension.library_paths()
    return [cxx, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++20", "-w",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *inc, str(SOURCE), "-o", str(out),
            *[f"-L{d}" for d in libdirs], *[f"-Wl,-rpath,{d}" for d in libdirs], "-lc10", "-ltorch_cpu"]


def _build() -> Path:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    key = hashlib.sha256(
        SOURCE.read_bytes() + torch.__version__.encode() + sys.version.encode() + _cpu_id().encode() + cxx.encode()
    ).hexdigest()[:16]
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    so = d / f"grace_cpu_{key}.so"
    if so.exists():
        return so
    import fcntl  # POSIX only; the backends are x86-64 Linux only anyway

    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then find the file
        if so.exists():
            return so
        tmp = d / f".grace_cpu_{key}.{os.getpid()}.so"
        from rich.console import Console

        with Console(stderr=True).status("grace: compiling native CPU kernels (first use, ~30 s)"):
            r = subprocess.run(_compile_command(cxx, tmp), capture_output=True, text=True)
        if r.returncode != 0:
            log = d / f"build_{key}.log"
            log.write_text(r.stdout + r.stderr)
            raise RuntimeError(f"compiling {SOURCE.name} failed (exit {r.returncode}); compiler output in {log}")
        os.replace(tmp, so)  # atomic: readers never see a half-written library
    return so


def load() -> bool:
    """Build (if needed) and load the native ops once per process; False (with a warning) if impossible."""
    if _STATE["loaded"]:
        return True
    if _STATE["error"] is not None:
        return False
    try:
        if os.environ.get("GRACE_NATIVE", "1") == "0":
            raise RuntimeError("disabled by GRACE_NATIVE=0")
        if platform.machine().lower() not in ("x86_64", "amd64") or not sys.platform.startswith("linux"):
            raise RuntimeError(f"native kernels are x86-64 Linux only (this is {sys.platform}/{platform.machine()})")
        torch.ops.load_library(str(_build()))
        _register_fakes()
        if torch.ops.grace_native.isa() != 512:
            raise RuntimeError("this CPU has no AVX-512 (F, BW, VL); the native kernels would be slower than torch's")
    except Exception as e:  # noqa: BLE001 - any failure means "use the torch backends"
        _STATE["error"] = str(e)
        if os.environ.get("GRACE_NATIVE", "1") != "0":
            warnings.warn(f"grace native CPU kernels unavailable: {e}", stacklevel=2)
        return False
    _STATE["loaded"] = True
    return True


def _register_fakes() -> None:
    # Shape-only versions so torch.compile can trace through the ops without a graph break.
    @torch.library.register_fake("grace_native::w8_linear")
    def _w8_fake(x, q, s, bias):
        return x.new_empty(x.shape[0], q.shape[0])

    @torch.library.register_fake("grace_native::w4_linear")
    def _w4_fake(x, qweight, sp, zp, inv_perm, bias):
        return x.new_empty(x.shape[0], inv_perm.shape[0])

    @torch.library.register_fake("grace_native::lsq_forward")
    def _lsq_fwd_fake(w, s, qmin, qmax):
        return torch.empty_like(w)

    @torch.library.register_fake("grace_native::lsq_backward")
    def _lsq_bwd_fake(g, w, s, qmin, qmax):
        return torch.empty_like(w), torch.empty_like(s)


def lsq_ops():
    """The fused LSQ fake-quant ops (``lsq_forward`` / ``lsq_backward``) if the native library loads, else None.

    Used by :func:`grace.numerics.fake_quantize` for fp32 CPU weights; without them it runs the
    same math as torch element-wise ops.
    """
    return torch.ops.grace_native if load() else None


def w4_permuted_scales(qzeros: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AWQ ``qzeros`` / ``scales`` -> the kernel's ``sp``, ``zp`` ``(G, blocks, 8, 16)`` fp32 and ``inv_perm``.

    Block ``b`` covers the 16 qweight words ``16b .. 16b+15``; lane ``l`` of nibble ``t`` is output
    ``8 (16b + l) + AWQ_ORDER[t]``. ``sp`` holds ``s`` and ``zp`` holds ``s * z`` at that position
    (0 past the last word); ``inv_perm[o]`` is output ``o``'s position in the flat permuted order.
    """
    n_groups, n_out = scales.shape
    n_words = n_out // 8
    nblk = (n_words + 15) // 16
    word = torch.arange(nblk * 16).view(nblk, 1, 16)
    out = 8 * word + torch.tensor(AWQ_ORDER).view(1, 8, 1)  # (blocks, 8, 16) output index
    valid = (word < n_words).expand(nblk, 8, 16)
    safe = torch.where(valid, out, torch.zeros_like(out))
    s = scales.float().cpu()
    sz = s * unpack_nibbles(qzeros.cpu()).float()
    sp = torch.where(valid, s[:, safe], 0.0).contiguous()
    zp = torch.where(valid, sz[:, safe], 0.0).contiguous()
    inv = torch.empty(n_out, dtype=torch.long)
    inv[out[valid]] = torch.arange(nblk * 128).view(nblk, 8, 16)[valid]
    return sp, zp, inv


class _NativeBase(Backend):
    devices = ("cpu",)
    compute_dtype = None  # fp32 accumulation with exact scales: as accurate as the activations

    def is_available(self, device: torch.device) -> bool:
        return device.type == "cpu" and load()

    def unavailable_reason(self, device: torch.device) -> str:
        if device.type != "cpu":
            return "it runs on the CPU only"
        return _STATE["error"] or "not built"


class Int4AVX512Backend(_NativeBase):
    name = "int4-avx512"
    bits = (4,)

    def prepare(self, module: PackedLinear) -> None:
        sp, zp, inv = w4_permuted_scales(module.qzeros, module.scales)
        module._kernel_state.update(sp=sp, zp=zp, inv=inv)

    def forward(self, module: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        check_device(module, x)
        st = module._kernel_state
        x2 = x.reshape(-1, module.in_features).contiguous()
        y = torch.ops.grace_native.w4_linear(x2, module.qweight, st["sp"], st["zp"], st["inv"], module.bias)
        return y.reshape(*x.shape[:-1], module.out_features)


class Int8AVX512Backend(_NativeBase):
    name = "int8-avx512"
    bits = (8,)

    def prepare(self, module: PackedLinear) -> None:
        module._kernel_state["s"] = module.scales.t().float().contiguous()  # (out, in/g)

    def forward(self, module: PackedLinear, x: torch.Tensor) -> torch.Tensor:
        check_device(module, x)
        x2 = x.reshape(-1, module.in_features).contiguous()
        y = torch.ops.grace_native.w8_linear(x2, module.qweight, module._kernel_state["s"], module.bias)
        return y.reshape(*x.shape[:-1], module.out_features)


int4_avx512 = register(Int4AVX512Backend())
int8_avx512 = register(Int8AVX512Backend())
