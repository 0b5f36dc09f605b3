"""CUDA backends (tinygemm int4, W8 via the int4 split) against the exact result; needs an sm80+ GPU.

Run with ``pytest -m gpu tests/kernels``. Not run in the default suite (no GPU there).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import grace.kernels as K
from conftest import assert_close_to_exact, make_packed, require

pytestmark = pytest.mark.gpu

SHAPES = [(128, 256, 128), (272, 384, 128), (64, 512, 64), (4096, 4096, 128)]


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.parametrize("name", ["int4-cuda", "int8-cuda", "reference", "dequant"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("bias", [False, True])
def test_cuda_backend_matches_exact(name, dtype, bias):
    require(name, "cuda")
    bits = 8 if name == "int8-cuda" else 4
    for i, (out_f, in_f, g) in enumerate(SHAPES):
        m = make_packed(out_f, in_f, bits, g, bias, seed=i, device="cuda")
        assert K.attach(m, name) == name
        for shape in [(1, in_f), (16, in_f), (2, 5, in_f)]:
            x = torch.randn(*shape, device="cuda").to(dtype)
            y = m(x)
            assert y.device.type == "cuda"
            assert_close_to_exact(m, x, y, name)  # the exact fp64 result is computed on the GPU too


def test_cuda_auto_choice_and_general_zeros():
    require("int4-cuda", "cuda")
    m = make_packed(128, 256, 4, 64, bias=True, general_zeros=True, device="cuda")
    assert K.attach(m, dtype=torch.bfloat16) == "int4-cuda"
    x = torch.randn(3, 256, device="cuda", dtype=torch.bfloat16)
    assert_close_to_exact(m, x, m(x), "int4-cuda")


@pytest.mark.parametrize("name", ["int4-cuda", "int8-cuda"])
def test_cuda_fullgraph_compile(name):
    require(name, "cuda")
    torch._dynamo.reset()
    bits = 8 if name == "int8-cuda" else 4
    m = nn.Sequential(make_packed(256, 128, bits, 64, False, device="cuda"),
                      make_packed(128, 256, bits, 64, True, seed=1, device="cuda"))
    K.attach(m, name)
    x = torch.randn(1, 128, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(torch.compile(m, fullgraph=True, backend="aot_eager")(x), m(x))
