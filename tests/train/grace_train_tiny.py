"""Tiny in-process VLMs, a word-level tokenizer and a small LLaVA-JSON corpus for training tests.

Everything is built with transformers / tokenizers directly from tiny configs (no hub): a
LLaVA-1.5-shaped model (CLIP tower + MLP projector + Llama) and a Qwen3-VL model, both with
hidden size 128 and a 160-token vocabulary shared with the tokenizer below.
"""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

VOCAB_SIZE = 160
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|image_pad|>", "<|vision_end|>"]
WORDS = ("a chat between curious user and an artificial intelligence assistant the gives helpful detailed "
         "polite answers to user's questions human human's USER ASSISTANT user assistant what is in this image "
         "describe picture color of shape red green blue yellow circle square triangle it shows large small "
         "there are two one three objects on left right yes no answer with word . , ? : ' s").split()


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {}
    for tok in SPECIALS + WORDS:
        vocab.setdefault(tok, len(vocab))
    assert len(vocab) < VOCAB_SIZE
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", additional_special_tokens=SPECIALS[4:])
    return fast


def image_token_id(tok) -> int:
    return tok.convert_tokens_to_ids("<image>")


def qwen_image_token_id(tok) -> int:
    return tok.convert_tokens_to_ids("<|image_pad|>")


def tiny_llava(seed: int, *, hidden: int = 128, layers: int = 3, image_token: int = 4):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    tc = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden,
                     num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                     max_position_embeddings=512, pad_token_id=3)
    vc = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          image_size=32, patch_size=8)
    cfg = LlavaConfig(text_config=tc, vision_config=vc, image_token_id=image_token, projector_hidden_act="gelu",
                      vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration(cfg)


def tiny_qwen3vl(seed: int, *, hidden: int = 128, layers: int = 3, image_token: int = 8):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen3VLConfig(
        text_config=dict(vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                         rope_scaling={"rope_type": "default", "mrope_section": [8, 4, 4]}),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=hidden,
                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        image_token_id=image_token, video_token_id=0, vision_start_token_id=7, vision_end_token_id=9)
    return Qwen3VLForConditionalGeneration(cfg)


def llava_processor():
    from transformers import LlavaImageProcessorPil

    return LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def qwen_processor():
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                    size={"shortest_edge": 64 * 64, "longest_edge": 64 * 64})


_QUESTIONS = ["what is in this image ?", "describe the picture .", "what color is the shape ?",
              "how many objects are there ?"]
_ANSWERS = ["a red circle on the left .", "two blue squares .", "it shows a large green triangle .",
            "there are three small yellow objects .", "yes .", "no ."]


def write_corpus(root: Path, n: int = 16, *, seed: int = 0, bad: bool = False, name: str = "train.json") -> Path:
    """``n`` LLaVA-JSON records with 32x32 PNG images under ``root/images``; ``bad`` adds faulty ones."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        img = f"images/{name}-{i}.png"
        arr = (np.random.default_rng(seed * 1000 + i).random((32 + 8 * (i % 3), 32, 3)) * 255).astype("uint8")
        Image.fromarray(arr).save(root / img)
        conv = [{"from": "human", "value": "<image>\n" + rng.choice(_QUESTIONS)},
                {"from": "gpt", "value": rng.choice(_ANSWERS)}]
        if i % 4 == 3:
            conv += [{"from": "human", "value": rng.choice(_QUESTIONS)}, {"from": "gpt", "value": rng.choice(_ANSWERS)}]
        recs.append({"id": f"r{i}", "image": img, "conversations": conv})
    if bad:
        recs += [
            {"id": "missing-image", "image": "images/nope.png",
             "conversations": [{"from": "human", "value": "<image>\nwhat ?"}, {"from": "gpt", "value": "red ."}]},
            {"id": "no-marker", "image": recs[0]["image"],
             "conversations": [{"from": "human", "value": "what ?"}, {"from": "gpt", "value": "red ."}]},
            {"id": "empty-turn", "image": recs[0]["image"],
             "conversations": [{"from": "human", "value": "<image>\nwhat ?"}, {"from": "gpt", "value": "  "}]},
            {"id": "too-long", "image": recs[0]["image"],
             "conversations": [{"from": "human", "value": "<image>\n" + "red " * 300}, {"from": "gpt", "value": "ok"}]},
        ]
    path = root / name
    path.write_text(json.dumps(recs))
    return path


def llava_setup(root: Path, *, n: int = 16, bad: bool = False, student_seed: int = 1, teacher_seed: int = 2,
                hidden: int = 128, teacher_hidden: int | None = None, write: bool = True):
    """(student, teacher, dataset, collate_fn, tokenizer, processor) for a tiny LLaVA run.

    ``write=False`` reuses a corpus already in ``root`` (several processes must not write it at once).
    """
    from grace.data.conversations import ConversationDataset, pad_collate
    from grace.train.build import family_encoder

    tok = make_tokenizer()
    proc = llava_processor()
    student = tiny_llava(student_seed, hidden=hidden, image_token=image_token_id(tok))
    teacher = tiny_llava(teacher_seed, hidden=teacher_hidden or hidden, image_token=image_token_id(tok))
    data = write_corpus(root, n, bad=bad) if write else root / "train.json"
    enc = family_encoder(student, tok, proc, 200)
    ds = ConversationDataset([data], encode_fn=enc, image_root=root, max_length=200)
    return student, teacher, ds, partial(pad_collate, pad_token_id=tok.pad_token_id), tok, proc


def qwen_setup(root: Path, *, n: int = 8):
    from grace.data.conversations import ConversationDataset, pad_collate
    from grace.train.build import family_encoder

    tok = make_tokenizer()
    proc = qwen_processor()
    qid = qwen_image_token_id(tok)
    student, teacher = tiny_qwen3vl(1, image_token=qid), tiny_qwen3vl(2, image_token=qid)
    data = write_corpus(root, n)
    enc = family_encoder(student, tok, proc, 300)
    ds = ConversationDataset([data], encode_fn=enc, image_root=root, max_length=300)
    return student, teacher, ds, partial(pad_collate, pad_token_id=tok.pad_token_id), tok, proc


def simple_saver(model, tokenizer, processor, out_dir, *, layout="hf", family=None):
    """Stand-in for grace.io.save_checkpoint: dense weights without log-scales + the QAT sidecar."""
    from grace.formats.qat_sidecar import save_sidecar, save_spec
    from grace.quant.api import qat_modules, sidecar_tensors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("log_scale")}
    model.save_pretrained(out, state_dict=state)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    mods = qat_modules(model)
    if mods:
        save_sidecar(out, sidecar_tensors(model))
        m = next(iter(mods.values()))
        save_spec(out, {"bits": m.bits, "group_size": m.requested_group_size})
    (out / "saved_by.json").write_text(json.dumps({"layout": layout, "family": family}))
