"""Known answers: template strings, chunk-wise tokenisation, pad preprocessing, training encoding."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from grace.data import templates as T
from grace.models import collate, encode_example, render_prompt
from grace.models import families as F
from grace.models.tiny import make_tiny

VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\nWhat is the color of the bus?\n"
    "Answer the question using a single word or phrase. ASSISTANT:"
)


@pytest.fixture(scope="module")
def llava():
    return make_tiny("llava")


@pytest.fixture(scope="module")
def qwen():
    return make_tiny("qwen3vl")


def test_vicuna_v1_prompt_is_the_formats_string(llava):
    q = "What is the color of the bus?\nAnswer the question using a single word or phrase."
    assert T.llava_prompt(q, "vicuna_v1") == VICUNA
    assert render_prompt(llava, q) == VICUNA


def test_llava_v1_and_multi_turn_strings(llava):
    p = T.llava_prompt("Q", "llava_v1")
    assert p.startswith("A chat between a curious human and an artificial intelligence assistant. ")
    assert p.endswith("the human's questions. USER: <image>\nQ ASSISTANT:")
    multi = render_prompt(llava, "Q2", history=[("Q1", "A1")])
    assert multi.endswith(" USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:")
    assert render_prompt(llava, "Q", with_image=False).endswith(" USER: Q ASSISTANT:")


def test_qwen_prompt_matches_its_chat_template(qwen):
    p = render_prompt(qwen, "What is it?")
    assert p == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n<|im_start|>assistant\n"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    assert qwen.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == p


def test_chunkwise_tokenisation_keeps_the_space_before_and_after_the_image(llava):
    tok = llava.tokenizer
    ids = T.tokenize_with_image(tok, "USER: <image>\nWhat is it?", image_token_id=9999, n_image_tokens=3)
    sp = tok.convert_tokens_to_ids("▁")
    nl = tok.convert_tokens_to_ids("<0x0A>")
    i = ids.index(9999)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[i - 1] == sp  # "USER: " ends with "▁"
    assert ids[i : i + 3] == [9999] * 3
    assert ids[i + 3 : i + 5] == [sp, nl]  # the chunk after the image keeps its dummy prefix "▁"
    # whole-string tokenisation with the non-legacy tokenizer would lose that "▁" (notes §2.3)
    whole = tok("USER: <image>\nWhat", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(whole).count("▁") <= 1


def test_pad_preprocessing_by_hand():
    proc = F.llava_image_processor(4)
    img = Image.new("RGB", (4, 2), (255, 0, 0))  # wide: padded top and bottom with the mean colour
    px = proc(images=img, return_tensors="pt")["pixel_values"][0]  # (3, 4, 4)
    mean, std = torch.tensor(F.CLIP_MEAN), torch.tensor(F.CLIP_STD)
    pad = torch.tensor([122, 116, 104]) / 255.0
    red = torch.tensor([1.0, 0.0, 0.0])
    expect = torch.empty(3, 4, 4)
    for row, colour in enumerate([pad, red, red, pad]):
        expect[:, row, :] = ((colour - mean) / std)[:, None]
    torch.testing.assert_close(px, expect, atol=1e-5, rtol=0)


def test_encode_example_labels_only_the_reply(llava):
    conv = [{"from": "human", "value": "What colour is it?\n<image>"}, {"from": "gpt", "value": "red"}]
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    ex = encode_example(llava, llava.tokenizer, llava.processor, conv, img, max_length=256)
    ids, labels = ex["input_ids"], ex["labels"]
    assert ex["pixel_values"].shape == (1, 3, 32, 32)
    assert int((ids == llava.image_token_id).sum()) == 16
    sup = ids[labels != -100].tolist()
    assert llava.tokenizer.decode(sup).strip() == "red</s>"
    # <image> moved to the front of its turn, followed by a newline (original preprocessing)
    text = llava.tokenizer.decode(ids[ids != llava.image_token_id])
    assert "USER:  \nWhat colour is it?" in text or "USER: \nWhat colour is it?" in text


def test_encode_example_qwen_has_grid_and_token_types(qwen):
    conv = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "blue"},
            {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "yes"}]
    img = Image.new("RGB", (64, 96), (0, 0, 255))
    ex = encode_example(qwen, qwen.tokenizer, qwen.processor, conv, img, max_length=256)
    n = int(ex["image_grid_thw"].prod()) // 4
    assert int(ex["mm_token_type_ids"].sum()) == n == int((ex["input_ids"] == qwen.image_token_id).sum())
    assert ex["pixel_values"].shape[0] == int(ex["image_grid_thw"].prod())
    sup = qwen.tokenizer.decode(ex["input_ids"][ex["labels"] != -100])
    assert sup == "blue<|im_end|>yes<|im_end|>"


@pytest.mark.parametrize(
    "conv, with_image, msg",
    [
        ([{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], True, "no turn contains <image>"),
        ([{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}], False, "no image is given"),
        ([{"from": "human", "value": "<image><image>Q"}, {"from": "gpt", "value": "A"}], True, "one image"),
        ([{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "  "}], True, "empty"),
        ([{"from": "gpt", "value": "A"}, {"from": "human", "value": "<image>Q"}], True, "alternate"),
        ([{"from": "human", "value": "<image>\nQ"}], True, "no assistant turn"),
        ([{"from": "human", "value": "<image>\n" + "word " * 300}, {"from": "gpt", "value": "A"}], True, "too long"),
    ],
)
def test_encode_example_rejects_bad_records(llava, conv, with_image, msg):
    img = Image.new("RGB", (8, 8)) if with_image else None
    with pytest.raises(ValueError, match=msg):
        encode_example(llava, llava.tokenizer, llava.processor, conv, img, max_length=128)


def test_collate_pads_right_and_concatenates_images(llava, qwen):
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    for vlm in (llava, qwen):
        a = encode_example(vlm, vlm.tokenizer, vlm.processor,
                           [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "yes"}], img, 512)
        b = encode_example(vlm, vlm.tokenizer, vlm.processor,
                           [{"from": "human", "value": "A longer question here?"}, {"from": "gpt", "value": "no"}],
                           None, 512)
        c = encode_example(vlm, vlm.tokenizer, vlm.processor,
                           [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "red"}], img, 512)
        pad = vlm.tokenizer.pad_token_id
        batch = collate([a, b, c], pad)
        n = max(len(e["input_ids"]) for e in (a, b, c))
        assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, n)
        la = len(a["input_ids"])
        assert batch["attention_mask"][0].tolist() == [1] * la + [0] * (n - la)
        assert (batch["labels"][0, la:] == -100).all() and (batch["input_ids"][0, la:] == pad).all()
        assert batch["pixel_values"].shape[0] == a["pixel_values"].shape[0] + c["pixel_values"].shape[0]
        if vlm.family == "qwen3vl":
            assert batch["image_grid_thw"].shape == (2, 3)
        with torch.no_grad():
            out = vlm.model(**batch)  # the batch is what the model takes, loss included
        assert torch.isfinite(out.loss)
