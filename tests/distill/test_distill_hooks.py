"""The forward-hook capture equals transformers' hidden_states at the same index."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from grace.distill import LayerCapture, decoder_layers, hidden_state_module


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("index", [-2, -1, 0, 1, -3])
def test_capture_matches_hidden_states(tiny_llama, index):
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        ref = tiny_llama(input_ids=ids, output_hidden_states=True).hidden_states[index]
        with LayerCapture(hidden_state_module(tiny_llama, index)) as cap:
            tiny_llama(input_ids=ids)
        torch.testing.assert_close(cap.pop(), ref)


def test_penultimate_is_layers_minus_two(tiny_llama):
    assert hidden_state_module(tiny_llama, -2) is decoder_layers(tiny_llama)[-2]
    with pytest.raises(ValueError):
        hidden_state_module(tiny_llama, -5)


def test_hook_is_removed_and_pop_refuses_stale(tiny_llama):
    mod = hidden_state_module(tiny_llama, -2)
    before = dict(mod._forward_hooks)  # transformers keeps hooks of its own there
    with LayerCapture(mod) as cap:
        assert len(mod._forward_hooks) == len(before) + 1
    assert dict(mod._forward_hooks) == before
    with pytest.raises(RuntimeError):
        cap.pop()
