"""attach / available_backends / describe: choice, overrides, errors, and buffers left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import grace.kernels as K
from conftest import make_packed
from grace.errors import GraceError


class Tiny(nn.Module):
    def __init__(self, bits=4):
        super().__init__()
        self.emb = nn.Embedding(10, 256, dtype=torch.bfloat16)
        self.a = make_packed(256, 256, bits, 128, bias=False, seed=1)
        self.b = make_packed(256, 256, bits, 128, bias=True, seed=2)


def test_available_backends_lists_reference_last_and_known_names():
    for bits in (4, 8):
        names = K.available_backends(bits, "cpu")
        assert names[-2:] == ["reference", "dequant"]
        assert all(n in K.backend_names() for n in names)
        assert not any("cuda" in n for n in names)
    assert "int4-cpu" in K.available_backends(4, "cpu")  # torch's CPU int4 kernel ships with torch
    assert "int8-cpu" not in K.available_backends(4, "cpu")


def test_available_backends_cuda_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert K.available_backends(4, "cuda") == ["reference", "dequant"]


def test_attach_returns_name_sets_backend_and_keeps_buffers():
    m = Tiny()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    name = K.attach(m)
    assert name == K.available_backends(4, "cpu", torch.bfloat16)[0]  # the model is bf16
    assert m.a.backend.name == name and m.b.backend is m.a.backend
    after = m.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "_kernel_state" not in str(list(after))  # the cache is not part of the checkpoint
    assert K.describe(m) == f"{name} (2 modules)"


def test_dtype_steers_w4_choice():
    m = make_packed(128, 256, 4, 128, bias=False)
    assert K.attach(m, dtype=torch.bfloat16) == K.available_backends(4, "cpu", torch.bfloat16)[0]
    assert K.attach(m, dtype=torch.float32) == K.available_backends(4, "cpu", torch.float32)[0]


def test_env_var_and_argument_override(monkeypatch):
    m = Tiny(bits=8)
    monkeypatch.setenv(K.ENV_VAR, "reference")
    assert K.attach(m) == "reference"
    assert K.attach(m, "dequant") == "dequant"  # the argument beats the environment
    monkeypatch.setenv(K.ENV_VAR, "auto")
    assert K.attach(m) == K.available_backends(8, "cpu", torch.bfloat16)[0]


def test_unknown_or_unfit_backend_is_one_clear_error(monkeypatch):
    m = Tiny(bits=8)
    with pytest.raises(GraceError, match="unknown kernel backend 'int3-fast'.*known: .*reference"):
        K.attach(m, "int3-fast")
    with pytest.raises(GraceError, match=r"'int4-cpu' does not handle 8-bit modules \(module 'a'\)"):
        K.attach(m, "int4-cpu")
    monkeypatch.setenv(K.ENV_VAR, "nope")
    with pytest.raises(GraceError, match="unknown kernel backend 'nope'"):
        K.attach(m)
    odd = make_packed(40, 256, 4, 128, bias=False)  # int4-cpu packs 16 output rows at a time
    with pytest.raises(GraceError, match="cannot run module"):
        K.attach(odd, "int4-cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GraceError, match="not available.*compute capability"):
            K.attach(odd, "int4-cuda")


def test_mixed_models_and_describe():
    m = Tiny()
    m.c = make_packed(40, 256, 4, 128, bias=False)  # falls back from int4-cpu
    name = K.attach(m, dtype=torch.bfloat16)
    first = K.available_backends(4, "cpu", torch.bfloat16)[0]
    if first == "int4-cpu":
        assert "+" in name and name.startswith("int4-cpu")
        assert K.describe(m).startswith("int4-cpu (2 modules), ")
    assert K.describe(nn.Linear(2, 2)) == "no packed modules"
    assert K.describe(make_packed(16, 128, 4, 128, False)) == "reference (not attached) (1 module)"


def test_reattach_clears_the_cache_and_stale_device_is_reported():
    m = make_packed(128, 256, 4, 128, bias=False)
    K.attach(m, "int4-cpu")
    assert "w" in m._kernel_state
    K.attach(m, "reference")
    assert "w" not in m._kernel_state
    K.attach(m, "int4-cpu")
    m._kernel_state["device"] = torch.device("meta")  # as if the model moved after attach
    with pytest.raises(GraceError, match="attach\\(model\\) again"):
        m(torch.randn(1, 256, dtype=torch.bfloat16))


def test_attach_on_a_model_without_packed_modules():
    assert K.attach(nn.Sequential(nn.Linear(4, 4))) == "none"
