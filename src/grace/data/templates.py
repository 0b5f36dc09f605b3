"""Conversation templates and image-aware tokenisation, one home for both inference and training.

LLaVA-1.5 (``vicuna_v1`` / ``llava_v1``, FORMATS.md §4): ``system + " "`` then, per turn,
``"USER: " + msg + " "`` and ``"ASSISTANT: " + msg + "</s>"``; an open assistant slot renders
as ``"ASSISTANT:"`` with no trailing space. The original code tokenises the text *chunks around
``<image>`` separately* (one BOS, every chunk keeps SentencePiece's dummy-prefix "▁") and splices
the image features between them; :func:`tokenize_with_image` does exactly that, inserting
``n_image_tokens`` copies of the image placeholder id (transformers' Llava scatters the image
features into those positions, which gives identical logits to the original splice).

Qwen3-VL: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` with an image rendered as
``<|vision_start|><|image_pad|><|vision_end|>`` and the generation prompt
``<|im_start|>assistant\\n`` (no default system prompt).

Training supervision (GRACE.md §8): only assistant replies are supervised, each reply together
with its end-of-turn marker (``</s>`` / ``<|im_end|>``), as the original LLaVA v1 preprocessing
does. A template renders a conversation to *segments* ``(text, supervised)``;
:func:`encode_segments` tokenises them with character offsets and labels exactly the tokens that
start inside supervised text.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_MARKER = "<image>"
IGNORE_INDEX = -100


@dataclass(frozen=True)
class ConvTemplate:
    name: str
    system: str
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str = "</s>"


_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
TEMPLATES: dict[str, ConvTemplate] = {
    "vicuna_v1": ConvTemplate("vicuna_v1", _VICUNA_SYSTEM),
    "v1": ConvTemplate("vicuna_v1", _VICUNA_SYSTEM),
    "llava_v1": ConvTemplate("llava_v1", _LLAVA_SYSTEM),
}
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def get_template(conv_mode: str) -> ConvTemplate:
    try:
        return TEMPLATES[conv_mode]
    except KeyError:
        raise ValueError(f"unknown conv_mode {conv_mode!r}; choose one of {sorted(TEMPLATES)}") from None


def _normalise_turns(conversations: list[dict]) -> list[tuple[int, str]]:
    """LLaVA JSON turns ``{from: human|gpt, value}`` -> ``[(role_index, text)]`` (0 user, 1 assistant)."""
    roles = {"human": 0, "user": 0, "gpt": 1, "assistant": 1}
    out = []
    for i, t in enumerate(conversations):
        who = str(t.get("from", t.get("role", ""))).lower()
        if who not in roles:
            raise ValueError(f"turn {i}: unknown speaker {who!r} (expected human/gpt)")
        out.append((roles[who], str(t.get("value", t.get("content", "")))))
    return out


def llava_segments(conversations: list[dict], conv_mode: str = "vicuna_v1",
                   add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """Render a conversation in a LLaVA template as ``(text, supervised)`` segments."""
    tpl = get_template(conv_mode)
    segs: list[tuple[str, bool]] = [(tpl.system + tpl.sep, False)]
    for role, text in _normalise_turns(conversations):
        if role == 0:
            segs.append((f"{tpl.roles[0]}: {text}{tpl.sep}", False))
        else:
            # The reply (with the space after the colon) and its "</s>" are what the model learns.
            segs.append((f"{tpl.roles[1]}:", False))
            segs.append((f" {text}{tpl.sep2}", True))
    if add_generation_prompt:
        segs.append((f"{tpl.roles[1]}:", False))
    return segs


def llava_prompt(query: str, conv_mode: str = "vicuna_v1", with_image: bool = True) -> str:
    """The single-turn inference prompt: ``... USER: <image>\\n{query} ASSISTANT:``."""
    text = f"{IMAGE_MARKER}\n{query}" if with_image else query
    return "".join(t for t, _ in llava_segments([{"from": "human", "value": text}], conv_mode, True))


def qwen_segments(conversations: list[dict], add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """Render a conversation in the Qwen3-VL chat format; ``<image>`` becomes the vision block."""
    segs: list[tuple[str, bool]] = []
    for role, text in _normalise_turns(conversations):
        text = text.replace(IMAGE_MARKER + "\n", QWEN_IMAGE).replace(IMAGE_MARKER, QWEN_IMAGE)
        if role == 0:
            segs.append((f"<|im_start|>user\n{text}<|im_end|>\n", False))
        else:
            segs.append(("<|im_start|>assistant\n", False))
            segs.append((f"{text}<|im_end|>", True))
            segs.append(("\n", False))
    if add_generation_prompt:
        segs.append(("<|im_start|>assistant\n", False))
    return segs


def qwen_prompt(query: str, with_image: bool = True) -> str:
    text = f"{IMAGE_MARKER}{query}" if with_image else query
    return "".join(t for t, _ in qwen_segments([{"from": "human", "value": text}], True))


def encode_segments(tokenizer, segments: list[tuple[str, bool]], *, image_marker: str, image_token_id: int,
                    n_image_tokens: int) -> tuple[list[int], list[int]]:
    """Tokenise rendered segments chunk-wise around ``image_marker``; returns ``(input_ids, labels)``.

    The text is split at each ``image_marker``; each chunk is tokenised on its own (special
    tokens such as BOS only for the first chunk, as the original LLaVA code keeps one BOS) and
    ``n_image_tokens`` copies of ``image_token_id`` go between chunks. A token is supervised
    (label = its id) when its first character lies in a supervised segment; image tokens and
    everything else get ``IGNORE_INDEX``. Needs a fast tokenizer (character offsets).
    """
    text = "".join(t for t, _ in segments)
    supervised = bytearray(len(text))
    pos = 0
    for t, sup in segments:
        if sup:
            supervised[pos : pos + len(t)] = b"\x01" * len(t)
        pos += len(t)

    ids: list[int] = []
    labels: list[int] = []
    chunks = text.split(image_marker)
    start = 0
    for ci, chunk in enumerate(chunks):
        if ci > 0:
            ids.extend([image_token_id] * n_image_tokens)
            labels.extend([IGNORE_INDEX] * n_image_tokens)
        enc = tokenizer(chunk, add_special_tokens=(ci == 0), return_offsets_mapping=True)
        for tok, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
            ids.append(tok)
            is_sup = b > a and supervised[start + a] == 1
            labels.append(tok if is_sup else IGNORE_INDEX)
        start += len(chunk) + len(image_marker)
    return ids, labels


def tokenize_with_image(tokenizer, prompt: str, image_token_id: int, n_image_tokens: int,
                        image_marker: str = IMAGE_MARKER) -> list[int]:
    """Inference ids for ``prompt`` with each ``image_marker`` expanded to ``n_image_tokens`` ids."""
    ids, _ = encode_segments(tokenizer, [(prompt, False)], image_marker=image_marker,
                             image_token_id=image_token_id, n_image_tokens=n_image_tokens)
    return ids
