"""grace: quantization-aware distillation (GRACE) for vision-language models.

Public API (re-exports only; each concept lives in its own subpackage):

    import grace
    names = grace.quantize(model, grace.W4G128)   # wrap LM linears with fake-quant LSQ modules
    vlm = grace.load("path/to/checkpoint")        # any supported layout / form
"""

from grace.config import W4G128, W8G128, QuantSpec

__version__ = "0.1.0"

__all__ = [
    "QuantSpec",
    "W4G128",
    "W8G128",
    "quantize",
    "bake",
    "dequantize_modules",
    "param_groups",
    "__version__",
]


# The torch-backed API is imported on first use, so `grace --help` and config-only imports do not
# pay for importing torch.
_LAZY = {"quantize": "grace.quant.api", "bake": "grace.quant.api", "dequantize_modules": "grace.quant.api",
         "param_groups": "grace.quant.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grace' has no attribute {name!r}")


def load(path, **kwargs):
    """Load a checkpoint (dense, QAT or packed; LLaVA or Qwen3-VL) as a :class:`grace.io.VLM`."""
    from grace.io.load import load as _load

    return _load(path, **kwargs)
