"""grace: quantization-aware distillation (GRACE) for vision-language models.

Public API (re-exports only; each concept lives in its own subpackage):

    import grace
    names = grace.quantize(model, grace.W4G128)   # wrap LM linears with fake-quant LSQ modules
    vlm = grace.load("path/to/checkpoint")        # any supported layout / form
"""

from grace.config import W4G128, W8G128, QuantSpec
from grace.quant.api import bake, dequantize_modules, param_groups, quantize

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


def load(path, **kwargs):
    """Load a checkpoint (dense, QAT or packed; LLaVA or Qwen3-VL) as a :class:`grace.io.VLM`."""
    from grace.io.load import load as _load

    return _load(path, **kwargs)
