"""`grace kernels` lists what attach would pick; a bad dtype is one GraceError."""

from __future__ import annotations

import pytest

import grace.kernels as K
from grace.cli.kernels_cmds import kernels_cmd
from grace.errors import GraceError


def test_kernels_command_lists_backends(capsys):
    kernels_cmd(device="cpu", dtype="bfloat16")
    out = capsys.readouterr().out
    assert f"W4 on cpu (bfloat16): {', '.join(K.available_backends(4, 'cpu'))}" in out
    assert "W8 on cpu (bfloat16): " in out


def test_kernels_command_bad_dtype():
    with pytest.raises(GraceError, match="--dtype must be"):
        kernels_cmd(device="cpu", dtype="int7")
