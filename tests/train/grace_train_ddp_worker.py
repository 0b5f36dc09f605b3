"""Worker for the data-parallel test: ``torchrun --nproc_per_node 2 grace_train_ddp_worker.py DATA OUT``."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from grace_train_tiny import llava_setup, simple_saver  # noqa: E402

from grace.train import TrainConfig, train  # noqa: E402


def config(out, *, grad_accum: int) -> TrainConfig:
    return TrainConfig(mode="grace", output_dir=str(out), micro_batch_size=2, grad_accum=grad_accum, max_steps=3,
                       save_every=0, rcka_warmup_steps=0, lr=2e-3, warmup_steps=0, progress=False, ib_tau=0.1,
                       ib_eta=0.5, seed=7)


def main(data: str, out: str) -> None:
    torch.set_num_threads(1)
    student, teacher, ds, collate, tok, proc = llava_setup(Path(data), write=False)
    train(config(out, grad_accum=1), student=student, teacher=teacher, dataset=ds, collate_fn=collate, tokenizer=tok,
          processor=proc, save_fn=simple_saver)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
