"""Pack + verify all 224 linears of a LLaMA-7B-shaped language model, streamed layer by layer.

Per decoder layer: q/k/v/o (4096x4096) and gate/up (11008x4096) / down (4096x11008), 32 layers.
Random codes and scales stand in for a trained model (packing cost does not depend on values).
For each linear: pack to AWQ GEMM (W4) with grace.formats.awq_gemm, unpack, and compare the codes
(max int-code error must be 0) and the scales. The baseline is a straightforward packer that
loops over output columns in Python (the habit of the AutoAWQ-style reference packers), timed on
one 4096x4096 layer in the same run and extrapolated by element count.

    python bench/pack.py [--layers 32] [--bits 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from grace.formats import awq_gemm

SHAPES = [(4096, 4096)] * 4 + [(11008, 4096), (11008, 4096), (4096, 11008)]  # (out, in)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loop_packer(codes: torch.Tensor, scales: torch.Tensor, g: int) -> torch.Tensor:
    """The straightforward baseline: one Python iteration per output column."""
    out_f, in_f = codes.shape
    u = (codes.to(torch.int64) + 8).t()
    qweight = torch.zeros(in_f, out_f // 8, dtype=torch.int64)
    pos = {ch: k for k, ch in enumerate(awq_gemm.AWQ_ORDER)}
    for col in range(out_f):
        qweight[:, col // 8] |= u[:, col] << (4 * pos[col % 8])
    return qweight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--bits", type=int, default=4, choices=[4, 8])
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g, bits = args.group_size, args.bits
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    gen = torch.Generator().manual_seed(0)

    # Baseline on one 4096x4096 layer, in the same run.
    c0 = torch.randint(qmin, qmax + 1, (4096, 4096), generator=gen, dtype=torch.int8)
    s0 = torch.rand(4096, 4096 // g, generator=gen) + 0.01
    t = time.perf_counter()
    ref = loop_packer(c0, s0, g)
    t_loop_layer = time.perf_counter() - t
    ours = awq_gemm.pack_w4(c0, s0, g)["qweight"]
    assert torch.equal(ours.to(torch.int64) & 0xFFFFFFFF, ref & 0xFFFFFFFF), "baseline disagrees with grace packer"
    del c0, s0, ref, ours

    n_modules, mismatches, t_gen, t_pack, t_verify, elems = 0, 0, 0.0, 0.0, 0.0, 0
    try:
        from rich.progress import track
    except ImportError:  # pragma: no cover
        def track(x, description=""):
            return x
    wall0 = time.perf_counter()
    for _layer in track(range(args.layers), description="pack+verify"):
        for out_f, in_f in SHAPES:
            t = time.perf_counter()
            codes = torch.randint(qmin, qmax + 1, (out_f, in_f), generator=gen, dtype=torch.int8)
            scales = (torch.rand(out_f, in_f // g, generator=gen) + 0.01).half().float()
            t_gen += time.perf_counter() - t
            t = time.perf_counter()
            packed = awq_gemm.pack(codes, scales, bits, g)
            t_pack += time.perf_counter() - t
            t = time.perf_counter()
            c2, s2, g2 = awq_gemm.unpack(packed, bits)
            # exact equality first (fast, memcmp-like); count the mismatches only if there are any
            bad = 0 if torch.equal(c2, codes) else int((c2 != codes).sum())
            bad += 0 if torch.equal(s2.float(), scales) else int((s2.float() != scales).sum())
            bad += int(g2 != g)
            t_verify += time.perf_counter() - t
            mismatches += bad
            n_modules += 1
            elems += out_f * in_f
            del codes, scales, packed, c2, s2
    wall = time.perf_counter() - wall0
    loop_total = t_loop_layer * elems / (4096 * 4096)
    res = {
        "modules": n_modules,
        "bits": bits,
        "threads": torch.get_num_threads(),
        "pack_s": round(t_pack, 2),
        "verify_s": round(t_verify, 2),
        "pack_plus_verify_s": round(t_pack + t_verify, 2),
        "random_generation_s": round(t_gen, 2),
        "wall_s": round(wall, 2),
        "mismatched_codes": mismatches,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "loop_packer_one_4096x4096_s": round(t_loop_layer, 3),
        "loop_packer_extrapolated_s": round(loop_total, 1),
        "speedup_vs_loop_packer": round(loop_total / max(t_pack, 1e-9), 1),
    }
    print(f"packed + verified {n_modules} linears (W{bits}G{g}) in {t_pack + t_verify:.1f} s "
          f"(pack {t_pack:.1f} s, verify {t_verify:.1f} s; random codes {t_gen:.1f} s; wall {wall:.1f} s)")
    print(f"mismatched codes: {mismatches}")
    print(f"peak RSS: {res['peak_rss_mb']:.0f} MB")
    print(f"per-column loop packer: {t_loop_layer:.2f} s for one 4096x4096 layer -> {loop_total:.0f} s extrapolated; "
          f"grace packer is {res['speedup_vs_loop_packer']:.0f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
