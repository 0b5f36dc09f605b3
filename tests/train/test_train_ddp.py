"""Two CPU processes (gloo, torchrun) x 1 micro-batch == one process x 2 accumulated micro-batches."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from grace_train_ddp_worker import config
from grace_train_tiny import llava_setup, simple_saver, write_corpus
from safetensors.torch import load_file

from grace.train import train

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_matches_one_process(tmp_path):
    data = tmp_path / "data"
    write_corpus(data, 16)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(HERE / "grace_train_ddp_worker.py"), str(data), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    student, teacher, ds, collate, tok, pr = llava_setup(data, write=False)
    one = train(config(tmp_path / "one", grad_accum=2), student=student, teacher=teacher, dataset=ds,
                collate_fn=collate, tokenizer=tok, processor=pr, save_fn=simple_saver)

    ddp_log = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    one_log = [json.loads(x) for x in one.log_path.read_text().splitlines()]
    assert len(ddp_log) == len(one_log) == 3
    for a, b in zip(ddp_log, one_log, strict=True):
        assert a["tokens"] == b["tokens"]
        for key in ("ce", "gdkd", "rcka", "gate", "beta", "beta_next", "grad_norm"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(b[key])), (key, a, b)
    w_ddp = load_file(tmp_path / "ddp" / "model" / "model.safetensors")
    w_one = load_file(one.model_dir / "model.safetensors")
    assert w_ddp.keys() == w_one.keys()
    for k in w_one:
        torch.testing.assert_close(w_ddp[k], w_one[k], rtol=1e-5, atol=1e-6, msg=k)
