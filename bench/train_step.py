"""Step-time overhead of QAT and of GRACE, measured through the real training loop.

    PYTHONPATH=src python bench/train_step.py [--hidden 512 --layers 4 --batch 4 --steps 5 --threads 1]

Builds one LLaVA-shaped student (CLIP stub + projector + Llama LM of the given width) and one
teacher of the same shape, and one fixed batch; runs ``grace.train.train`` in the modes sft,
qat and grace on them and prints the median optimizer-step time of each, as process CPU time
(primary: robust to other jobs on a shared machine) and as the loop's wall-clock step time,
first ``--warmup`` steps dropped, and the ratios qat/sft (goal <= 1.2) and grace/qat (goal <= 2).
fp32 on CPU, one thread by default (the shared CPU makes 2-thread timings erratic). Never
imported by the package.

Why 512 tokens per step: fake quantization costs a fixed number of element-wise passes over the
*weights* per step, while the matmuls scale with the *tokens*; the QAT overhead ratio therefore
shrinks as the batch grows (real runs use thousands of tokens per micro-step). 4 x 128 tokens is
the most this 2-core CPU can run in well under a minute while keeping that ratio meaningful.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_model(seed: int, args):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    tc = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                     num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                     num_key_value_heads=args.hidden // 64, max_position_embeddings=1024)
    side = int(args.image_tokens**0.5) * 4
    vc = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          image_size=side, patch_size=4)
    cfg = LlavaConfig(text_config=tc, vision_config=vc, image_token_id=args.vocab - 1, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(cfg)


class FixedBatch(torch.utils.data.Dataset):
    """The same encoded example at every index: every step sees identical work."""

    def __init__(self, args):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(10, args.vocab - 2, (args.seq,), generator=g)
        ids[4 : 4 + args.image_tokens] = args.vocab - 1
        labels = ids.clone()
        labels[: args.seq // 2] = -100  # prompt + image unsupervised, the reply supervised
        side = int(args.image_tokens**0.5) * 4
        self.item = {"input_ids": ids, "labels": labels, "pixel_values": torch.randn(1, 3, side, side, generator=g)}

    def __len__(self):
        return 1024

    def __getitem__(self, i):
        return dict(self.item)


def run_mode(mode: str, args, work: Path) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of each timed optimizer step of ``mode``."""
    from grace.data.conversations import pad_collate
    from grace.train import TrainConfig, train

    student = build_model(1, args)
    teacher = build_model(2, args) if mode in ("kd", "grace") else None
    cfg = TrainConfig(mode=mode, output_dir=str(work / mode), micro_batch_size=args.batch, grad_accum=1,
                      max_steps=args.warmup + args.steps, save_every=0, save_final=False, progress=False,
                      mixed_precision="no", warmup_steps=0, rcka_warmup_steps=0, lr=1e-5, seed=0)
    # CPU time between consecutive end-of-step callbacks: with one thread it counts only this
    # process's work, so other jobs on a shared machine do not inflate it the way they do wall time.
    marks: list[float] = []
    res = train(cfg, student=student, teacher=teacher, dataset=FixedBatch(args), collate_fn=pad_collate,
                on_step=lambda rec: marks.append(time.process_time()))
    wall = [json.loads(line)["sec"] for line in res.log_path.read_text().splitlines()]
    cpu = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return wall[args.warmup :], cpu[args.warmup - 1 :]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--image-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    n_q = 7 * args.layers
    w_q = args.layers * (4 * args.hidden**2 + 3 * args.hidden * args.intermediate)
    print(f"LLaVA-shaped model: LM hidden {args.hidden} x {args.layers} layers, MLP {args.intermediate}, "
          f"vocab {args.vocab}; {n_q} quantized linears ({w_q / 1e6:.1f}M weights); teacher = same shape")
    print(f"batch {args.batch} x {args.seq} tokens ({args.image_tokens} image, {args.seq // 2} supervised), fp32, "
          f"{args.threads} thread(s), {args.steps} timed steps after {args.warmup} warm-up; median per step")
    t0 = time.perf_counter()
    wall, cpu = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("sft", "qat", "grace"):
            w, c = run_mode(mode, args, Path(tmp))
            wall[mode], cpu[mode] = statistics.median(w), statistics.median(c)
            print(f"  {mode:6s} CPU {cpu[mode] * 1e3:7.1f} ms/step, wall {wall[mode] * 1e3:7.1f} ms/step   "
                  f"(CPU per step: {', '.join(f'{x * 1e3:.0f}' for x in c)})")
    print(f"qat/sft   = {cpu['qat'] / cpu['sft']:.3f} (CPU time), {wall['qat'] / wall['sft']:.3f} (wall)   goal <= 1.2")
    print(f"grace/qat = {cpu['grace'] / cpu['qat']:.3f} (CPU time), {wall['grace'] / wall['qat']:.3f} (wall)   goal <= 2")
    print(f"wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
