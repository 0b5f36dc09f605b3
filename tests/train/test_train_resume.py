"""A run killed mid-way and resumed ends bit-identical to an uninterrupted run (weights, beta, log)."""

import json

import pytest
import torch
from grace_train_tiny import llava_setup, simple_saver

from grace.errors import GraceError
from grace.train import TrainConfig, train
from grace.train.checkpoint import list_checkpoints


class Killed(Exception):
    pass


def _cfg(out, **kw):
    base = dict(mode="grace", output_dir=str(out), micro_batch_size=2, grad_accum=2, max_steps=5, save_every=2,
                keep_checkpoints=1, rcka_warmup_steps=2, dkd_warmup_steps=1, lr=2e-3, warmup_steps=1,
                progress=False, ib_tau=0.1, ib_eta=0.5)  # tau below GDKD: beta moves every step
    base.update(kw)
    return TrainConfig(**base)


def _run(tmp_path, out, *, resume=False, on_step=None):
    student, teacher, ds, collate, tok, proc = llava_setup(tmp_path / "data", bad=True)
    return train(_cfg(out), student=student, teacher=teacher, dataset=ds, collate_fn=collate, tokenizer=tok,
                 processor=proc, save_fn=simple_saver, resume=resume, on_step=on_step)


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    ref = _run(tmp_path, tmp_path / "ref")

    def kill_at_3(rec):
        if rec["step"] == 3:  # after the step-2 checkpoint, before the step-4 one
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path, tmp_path / "cut", on_step=kill_at_3)
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [2]
    # Starting again without --resume would silently mix runs: refused.
    with pytest.raises(GraceError, match="--resume"):
        _run(tmp_path, tmp_path / "cut")
    got = _run(tmp_path, tmp_path / "cut", resume=True)

    assert got.beta == ref.beta and ref.beta != 0.5
    ref_sd, got_sd = ref.model.state_dict(), got.model.state_dict()
    assert ref_sd.keys() == got_sd.keys()
    for k in ref_sd:
        assert torch.equal(ref_sd[k], got_sd[k]), k
    ref_log = [json.loads(x) for x in ref.log_path.read_text().splitlines()]
    got_log = [json.loads(x) for x in got.log_path.read_text().splitlines()]
    strip = ("sec",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in ref_log] == \
           [{k: v for k, v in r.items() if k not in strip} for r in got_log]
    assert got.skipped == ref.skipped and sum(ref.skipped.values()) == 4
    # keep_checkpoints=1: only the newest survives, and no temporary directory is left behind.
    names = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert names == ["step-00000004"]
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["samples_seen"] == 16 and state["controller"]["steps"] == 4


def test_resume_refuses_changed_batch(tmp_path):
    student, teacher, ds, collate, tok, proc = llava_setup(tmp_path / "data")
    train(_cfg(tmp_path / "r", max_steps=2), student=student, teacher=teacher, dataset=ds, collate_fn=collate,
          tokenizer=tok, save_fn=simple_saver)
    student, teacher, ds, collate, tok, proc = llava_setup(tmp_path / "data")
    with pytest.raises(GraceError, match="global_batch"):
        train(_cfg(tmp_path / "r", max_steps=2, micro_batch_size=1), student=student, teacher=teacher, dataset=ds,
              collate_fn=collate, tokenizer=tok, save_fn=simple_saver, resume=True)
