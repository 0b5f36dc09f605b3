"""grace.formats.safetensors is the one codec: its files load with the safetensors library and back."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from grace.formats.checkpoint import read_header
from grace.formats.metadata import FormatError
from grace.formats.safetensors import SafetensorsFile, write_safetensors


def test_round_trip_with_the_reference_library(tmp_path):
    g = torch.Generator().manual_seed(0)
    ts = {"a": torch.randn(3, 5, generator=g).half(), "b": torch.arange(7, dtype=torch.int32),
          "c": torch.randn(2, 2, generator=g).to(torch.float8_e4m3fn), "empty": torch.zeros(0, 4)}
    write_safetensors(tmp_path / "ours.safetensors", ts, {"format": "pt"})
    ref = load_file(tmp_path / "ours.safetensors")
    assert all(torch.equal(ref[k].view(torch.uint8), ts[k].view(torch.uint8)) for k in ts)
    save_file(ts, str(tmp_path / "theirs.safetensors"))
    f = SafetensorsFile(tmp_path / "theirs.safetensors")
    assert all(torch.equal(f.read(k).view(torch.uint8), ts[k].view(torch.uint8)) for k in ts)
    hdr = read_header(tmp_path / "theirs.safetensors")
    assert hdr["c"].dtype == "F8_E4M3" and hdr["c"].nbytes == 4 and hdr["a"].shape == (3, 5)


def test_header_offsets_are_validated_naming_the_tensor(tmp_path):
    p = tmp_path / "bad.safetensors"
    write_safetensors(p, {"w": torch.zeros(4, 4)})
    p.write_bytes(p.read_bytes()[:-8])  # truncated data section
    with pytest.raises(FormatError, match=r"bad\.safetensors: tensor 'w'"):
        read_header(p)
