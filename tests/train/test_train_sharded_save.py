"""The final bake-and-save path of sharding engines (FSDP / DeepSpeed), exercised on one CPU process.

accelerate runs FSDP and DeepSpeed only on accelerators, so this machine cannot shard for real.
What can be checked here is grace's half of that path: the student is copied to a parameter-free
skeleton before ``prepare``, the gathered full state dict fills it, and the baked checkpoint
written from it equals the one the ordinary (unwrap) path writes.
"""

import pytest
import torch
from grace_train_tiny import llava_setup, qwen_setup, simple_saver
from safetensors.torch import load_file

from grace.errors import GraceError
from grace.formats.qat_sidecar import load_sidecar
from grace.train import TrainConfig, train
from grace.train import loop as L


def _run(tmp_path, name, setup, sharded: bool, monkeypatch):
    monkeypatch.setattr(L, "_shards_parameters", lambda acc: sharded)
    student, teacher, ds, collate, tok, proc = setup(tmp_path / "data")
    cfg = TrainConfig(mode="grace", output_dir=str(tmp_path / name), micro_batch_size=2, max_steps=2, save_every=0,
                      rcka_warmup_steps=0, lr=1e-3, progress=False, seed=3)
    return train(cfg, student=student, teacher=teacher, dataset=ds, collate_fn=collate, tokenizer=tok,
                 processor=proc, save_fn=simple_saver)


@pytest.mark.parametrize("setup", [llava_setup, qwen_setup], ids=["llava", "qwen3vl"])
def test_gathered_skeleton_saves_the_same_checkpoint(tmp_path, monkeypatch, setup):
    plain = _run(tmp_path, "plain", setup, False, monkeypatch)
    gathered = _run(tmp_path, "gathered", setup, True, monkeypatch)
    a = load_file(plain.model_dir / "model.safetensors")
    b = load_file(gathered.model_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = load_sidecar(plain.model_dir), load_sidecar(gathered.model_dir)
    assert sa.keys() == sb.keys() and sa  # baked grid weights + log-scales, the same on both paths
    for name in sa:
        assert all(torch.equal(sa[name][k], sb[name][k]) for k in sa[name]), name
    # The returned module is a real, runnable copy: no meta tensors left.
    assert not any(p.is_meta for p in gathered.model.parameters())
    assert not any(t.is_meta for t in gathered.model.buffers())


def test_skeleton_holds_no_parameter_memory_and_refuses_a_partial_state():
    lin = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    sk = L.meta_skeleton(lin)
    assert all(p.is_meta for p in sk.parameters())
    assert all(not p.is_meta for p in lin.parameters())  # the original is untouched
    state = {k: v.clone() for k, v in lin.state_dict().items()}
    L.fill_skeleton(L.meta_skeleton(lin), state)
    del state["1.bias"]
    with pytest.raises(GraceError, match=r"1\.bias"):
        L.fill_skeleton(L.meta_skeleton(lin), state)


def test_skeleton_keeps_shared_parameters_shared():
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    sk = L.meta_skeleton(model)
    assert sk["emb"].weight is sk["head"].weight
