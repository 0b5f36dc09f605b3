"""Each backend's forward traces with torch.compile(fullgraph=True): no graph breaks in decode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import grace.kernels as K
from conftest import make_packed, require


class Block(nn.Module):
    def __init__(self, bits):
        super().__init__()
        self.up = make_packed(256, 128, bits, 64, bias=False, seed=1)
        self.down = make_packed(128, 256, bits, 64, bias=True, seed=2)

    def forward(self, x):
        return self.down(torch.nn.functional.silu(self.up(x)))


@pytest.mark.parametrize("name", ["reference", "int4-cpu", "int4-avx512", "int8-cpu", "int8-avx512"])
def test_fullgraph_compile(name):
    require(name)
    torch._dynamo.reset()
    bits = 8 if name.startswith("int8") else 4
    m = Block(bits)
    K.attach(m, name)
    x = torch.randn(1, 1, 128, dtype=torch.bfloat16)
    eager = m(x)
    # aot_eager runs dynamo + fake-tensor propagation + AOT tracing (catching graph breaks and
    # missing fake kernels) without inductor's C++ compile, so the test stays fast.
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), eager)
