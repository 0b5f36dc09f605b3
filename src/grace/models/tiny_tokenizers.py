"""Small tokenizers trained here, of the same kinds the real checkpoints ship.

* LLaVA-1.5 uses a SentencePiece BPE model (``tokenizer.model``, byte fallback, ids 0/1/2 =
  ``<unk>``/``<s>``/``</s>``, dummy-prefix "▁") read by transformers' ``LlamaTokenizer``.
* Qwen3-VL uses a byte-level BPE (``tokenizer.json``) behind ``Qwen2Tokenizer``, with its chat
  special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>``, ...).

Both are trained on :func:`corpus` -- the English of the synthetic VQA world (colours, shapes,
counts, positions, yes/no, option letters) and the templates' fixed text -- so tiny models see
short, realistic token sequences. Training is deterministic (single thread, fixed corpus order)
and takes well under a second; the trained bytes are cached per process, and every call returns
a fresh tokenizer object (callers may mutate padding side etc. without affecting others).
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
from pathlib import Path

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "brown", "pink", "cyan")
SHAPES = ("circle", "square", "triangle", "star", "rectangle", "diamond", "cross", "heart")
POSITIONS = ("left", "right", "top", "bottom", "center", "top left", "top right", "bottom left", "bottom right")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."

# The Qwen special tokens in the order the real Qwen2/3 vocabularies list them (after the BPE
# vocabulary), so ids keep the same relative order.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Our own chat template for the tiny Qwen tokenizer: renders string contents or lists of
# {"type": "image"} / {"type": "text"} items the way grace.data.templates.qwen_segments does.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def corpus() -> list[str]:
    """The fixed training sentences (deterministic order)."""
    from grace.data.templates import _LLAVA_SYSTEM, _VICUNA_SYSTEM

    lines = [_VICUNA_SYSTEM, _LLAVA_SYSTEM, SHORT_ANSWER, LETTER_ANSWER, "yes", "no", "Yes", "No"]
    for i, c in enumerate(COLOURS):
        for j, s in enumerate(SHAPES):
            p = POSITIONS[(i + j) % len(POSITIONS)]
            n = NUMBERS[(i * 3 + j) % len(NUMBERS)]
            lines += [
                f"USER: What is the color of the {s}? {SHORT_ANSWER} ASSISTANT: {c}",
                f"What shape is in the {p}? {s}",
                f"How many {s}s are there? {(i + j) % 10} ({n})",
                f"Is there a {c} {s} on the {p}? {'yes' if (i + j) % 2 else 'no'}",
                f"The {c} {s} is at the {p} of the image, above the {COLOURS[(i + 1) % len(COLOURS)]} one.",
                f"Where is the {c} {s}?\nA. {p}\nB. {POSITIONS[(i + j + 1) % len(POSITIONS)]}\nC. below\nD. next to it",
            ]
    lines += [f"{letter}. {letter}" for letter in "ABCDE"]
    lines += ["Describe the image.", "There are 3 objects: a red circle, a blue square and a green star."]
    return lines


@functools.cache
def _sentencepiece_bytes(vocab_size: int) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    # Llama-style settings: BPE, byte fallback (so any text encodes), digits split, dummy prefix,
    # whitespace kept as is, no normalisation; single thread for determinism.
    spm.SentencePieceTrainer.train(
        # One line per sentence and no "\n" inside: like LLaMA's vocabulary, newline is then only
        # reachable through byte fallback (<0x0A>), which the chunk-wise tokenisation tests rely on.
        sentence_iterator=iter([p for line in corpus() for p in line.split("\n")]),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return buf.getvalue()


LLAMA_TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "legacy": False,
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    # LLaVA v1 training pads with <unk> (id 0).
    "pad_token": "<unk>",
    "padding_side": "right",
    "model_max_length": 2048,
    "clean_up_tokenization_spaces": False,
}


def write_llava_tokenizer_files(directory: str | Path, vocab_size: int = 512) -> None:
    """Write ``tokenizer.model``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.model").write_bytes(_sentencepiece_bytes(vocab_size))
    (d / "tokenizer_config.json").write_text(json.dumps(LLAMA_TOKENIZER_CONFIG, indent=2))
    (d / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}, indent=2)
    )


def llava_tokenizer(vocab_size: int = 512):
    """A fresh transformers ``LlamaTokenizer`` over the trained SentencePiece model."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_llava_tokenizer_files(tmp, vocab_size)
        tok = AutoTokenizer.from_pretrained(tmp)
    # transformers 5 does not write tokenizer.model back on save; keep the bytes for the
    # original-layout writer (grace.io.save).
    tok.grace_sp_model = _sentencepiece_bytes(vocab_size)
    return tok


@functools.cache
def _qwen_vocab_merges(vocab_size: int) -> tuple[str, str]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    # Borrow the exact Qwen2 pre-tokenisation pipeline (regex split + byte level) from an empty
    # Qwen2Tokenizer, so the trained merges match how the tokenizer will split text.
    probe = Qwen2Tokenizer(vocab={"a": 0}, merges=[]).backend_tokenizer
    tk = Tokenizer(models.BPE())
    tk.normalizer = probe.normalizer
    tk.pre_tokenizer = probe.pre_tokenizer
    tk.decoder = probe.decoder
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tk.train_from_iterator(corpus(), trainer)
    model = json.loads(tk.to_str())["model"]
    return json.dumps(model["vocab"]), json.dumps(model["merges"])


def qwen_tokenizer(vocab_size: int = 768):
    """A fresh ``Qwen2Tokenizer`` (byte-level BPE) with the Qwen3-VL special tokens and chat template."""
    from transformers import Qwen2Tokenizer

    vocab_js, merges_js = _qwen_vocab_merges(vocab_size)
    vocab = json.loads(vocab_js)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in json.loads(merges_js)]
    n = len(vocab)
    for i, t in enumerate(QWEN_SPECIAL_TOKENS):
        vocab[t] = n + i
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS),
    )
    tok.chat_template = QWEN_CHAT_TEMPLATE
    tok.padding_side = "right"
    tok.model_max_length = 4096
    return tok
