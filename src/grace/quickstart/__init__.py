"""``grace quickstart``: train, quantize, pack and evaluate tiny LLaVAs on the synthetic VQA world.

Invariant: one call runs the GRACE paper's comparison (bf16 student vs RTN / QAT-only / GRACE at
W4G128 and lower bit-widths) end to end without downloads, every stage cached on disk so a second
call resumes. See docs/quickstart.md.

    from grace.quickstart import run
    res = run("runs/quickstart", seeds=3)
"""

from grace.quickstart.config import QuickConfig
from grace.quickstart.pipeline import run

__all__ = ["QuickConfig", "run"]
