"""``python -m grace.data.synthetic OUT_DIR``: generate (or reuse) a world and print its summary.

A thin script over :func:`generate_world`; the ``grace quickstart`` command is the user-facing
entry point, this one exists for inspecting a world by hand (``--contact-sheet`` writes a PNG).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from grace.data.synthetic import WorldConfig, contact_sheet, generate_world
from grace.errors import GraceError


def main(argv: list[str] | None = None) -> int:
    d = WorldConfig()
    ap = argparse.ArgumentParser(prog="python -m grace.data.synthetic", description=__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--train", type=int, default=d.n_train_images)
    ap.add_argument("--val", type=int, default=d.n_val_images)
    ap.add_argument("--test", type=int, default=d.n_test_images)
    ap.add_argument("--image-size", type=int, default=d.image_size)
    ap.add_argument("--grid", type=int, default=d.grid)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--contact-sheet", action="store_true")
    a = ap.parse_args(argv)
    try:
        cfg = WorldConfig(seed=a.seed, n_train_images=a.train, n_val_images=a.val, n_test_images=a.test,
                          image_size=a.image_size, grid=a.grid)
        t0 = time.perf_counter()
        info = generate_world(cfg, a.out_dir, overwrite=a.overwrite)
        dt = time.perf_counter() - t0
        print(json.dumps({"reused": info["reused"], "seconds": round(dt, 2), "counts": info["counts"],
                          "answer_prior": info["answer_prior"]}, indent=2))
        if a.contact_sheet:
            print(contact_sheet(a.out_dir))
    except GraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
