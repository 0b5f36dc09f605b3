"""Shared fixtures."""

import json

import pytest

from grace_testing import make_tiny_llama, save_qat_checkpoint


@pytest.fixture
def tiny_qat_dir(tmp_path):
    import grace

    model = make_tiny_llama()
    d = tmp_path / "qat"
    names = save_qat_checkpoint(model, d, grace.W4G128)
    (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    return d, names
