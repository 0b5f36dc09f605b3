"""Standard exports: checkpoints that transformers and vLLM load without grace (``grace export``).

    from grace.export import export_checkpoint
    report = export_checkpoint("ckpt/qat", "ckpt/llava-ct", "compressed-tensors")

See :mod:`grace.export.exporter` for the invariants and docs/export.md for serving.
"""

from grace.export.exporter import DTYPES, FORMATS, ExportError, ExportReport, export_checkpoint

__all__ = ["export_checkpoint", "ExportReport", "ExportError", "FORMATS", "DTYPES"]
