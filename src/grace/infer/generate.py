"""Decoding over a :class:`grace.models.VLM`: single, batched and multi-turn, with timing.

Defaults follow the LLaVA-1.5 evaluation (FORMATS.md §4, notes §4): greedy decoding
(``temperature=0``), stop at end of sequence only, decode the new tokens with special tokens
skipped and strip. Time to first token (TTFT) covers preprocessing, the prefill and the first
decode step; tokens/s counts the remaining tokens over the remaining time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from grace.data import templates as T
from grace.errors import GraceError
from grace.models.encode import collate_left, encode_prompt, render_prompt


class ContextLengthError(GraceError, ValueError):
    """A prompt that does not fit the model's context."""


@dataclass
class Generation:
    text: str
    n_new_tokens: int
    ttft_s: float
    tokens_per_s: float
    token_ids: list[int] = field(default_factory=list)


def load_image(image):
    """A PIL image from a PIL image, a path, or None; an unreadable file is one GraceError."""
    if image is None or hasattr(image, "convert"):
        return image
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    path = Path(image)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise GraceError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise GraceError(f"{path}: not a readable image ({e})") from None


def _is_full_prompt(vlm, text: str) -> bool:
    if vlm.family == "qwen3vl":
        return text.startswith("<|im_start|>")
    return any(text.startswith(t.system) for t in T.TEMPLATES.values())


def _context_limit(vlm) -> int:
    cfg = vlm.model.config.get_text_config()
    return int(getattr(cfg, "max_position_embeddings", 1 << 30))


def prepare(vlm, image, prompt_or_query: str, *, conv_mode: str | None = None) -> dict[str, torch.Tensor]:
    """Model inputs (batch of one, on the model's device) for a query or a full template prompt."""
    image = load_image(image)
    if _is_full_prompt(vlm, prompt_or_query):
        prompt = prompt_or_query
    else:
        prompt = render_prompt(vlm, prompt_or_query, with_image=image is not None, conv_mode=conv_mode)
    ex = encode_prompt(vlm, vlm.tokenizer, vlm.processor, prompt, image)
    return _to_model(vlm, collate_left([ex], _pad_id(vlm)))


def _pad_id(vlm) -> int:
    tok = vlm.tokenizer
    if tok.pad_token_id is not None:
        return int(tok.pad_token_id)
    return int(tok.unk_token_id if tok.unk_token_id is not None else tok.eos_token_id)


def _eos_ids(vlm) -> list[int]:
    tok = vlm.tokenizer
    ids = []
    if vlm.family == "qwen3vl":
        for t in ("<|im_end|>", "<|endoftext|>"):
            i = tok.convert_tokens_to_ids(t)
            if i is not None:
                ids.append(int(i))
    if tok.eos_token_id is not None and int(tok.eos_token_id) not in ids:
        ids.append(int(tok.eos_token_id))
    return ids


def _to_model(vlm, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dev = vlm.device
    vision_dtype = next(vlm.model.get_submodule(vlm.adapter.vision_tower).parameters()).dtype
    out = {}
    for k, v in batch.items():
        v = v.to(dev)
        if k == "pixel_values":
            v = v.to(vision_dtype)
        out[k] = v
    return out


class _Clock:
    """A transformers streamer that only records when tokens arrive."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.calls = 0
        self.t_first: float | None = None
        self.t_last: float | None = None

    def put(self, value):
        self.calls += 1
        if self.calls == 1:  # the prompt
            return
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now

    def end(self):
        pass


def _gen_kwargs(vlm, max_new_tokens: int, temperature: float) -> dict:
    kw = dict(max_new_tokens=max_new_tokens, eos_token_id=_eos_ids(vlm), pad_token_id=_pad_id(vlm), use_cache=True)
    if temperature and temperature > 0:
        kw.update(do_sample=True, temperature=float(temperature), top_p=None, top_k=None)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kw


def _check_context(vlm, n_prompt: int, max_new_tokens: int) -> None:
    limit = _context_limit(vlm)
    if n_prompt > limit:
        raise ContextLengthError(
            f"prompt is {n_prompt} tokens (image tokens included), longer than the model context "
            f"(config field max_position_embeddings = {limit})"
        )


@torch.inference_mode()
def generate_from_inputs(vlm, inputs: dict[str, torch.Tensor], *, max_new_tokens: int = 128,
                         temperature: float = 0.0, t0: float | None = None) -> Generation:
    n_prompt = inputs["input_ids"].shape[1]
    _check_context(vlm, n_prompt, max_new_tokens)
    clock = _Clock()
    if t0 is not None:
        clock.t0 = t0
    out = vlm.model.generate(**inputs, streamer=clock, **_gen_kwargs(vlm, max_new_tokens, temperature))
    t_end = time.perf_counter()
    new = out[0, n_prompt:].tolist()
    text = vlm.tokenizer.decode(new, skip_special_tokens=True).strip()
    n = len(new)
    ttft = (clock.t_first or t_end) - clock.t0
    rest = (t_end - clock.t_first) if clock.t_first is not None else 0.0
    tps = (n - 1) / rest if n > 1 and rest > 0 else (n / (t_end - clock.t0) if n else 0.0)
    return Generation(text, n, ttft, tps, new)


def generate(vlm, image, query: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
             conv_mode: str | None = None) -> Generation:
    """One answer with timing: ``generate(vlm, img, "What is it?").text``."""
    t0 = time.perf_counter()
    inputs = prepare(vlm, image, query, conv_mode=conv_mode)
    return generate_from_inputs(vlm, inputs, max_new_tokens=max_new_tokens, temperature=temperature, t0=t0)


@torch.inference_mode()
def generate_batch_ids(vlm, images: list, queries: list[str], *, max_new_tokens: int = 128,
                       conv_mode: str | None = None) -> list[list[int]]:
    """New token ids per (image, query), decoded greedily as one left-padded batch."""
    if len(images) != len(queries):
        raise ValueError(f"{len(images)} images but {len(queries)} queries")
    if not queries:
        return []
    exs = []
    images = [load_image(i) for i in images]
    for img, q in zip(images, queries, strict=True):
        prompt = q if _is_full_prompt(vlm, q) else render_prompt(vlm, q, with_image=img is not None,
                                                                   conv_mode=conv_mode)
        exs.append(encode_prompt(vlm, vlm.tokenizer, vlm.processor, prompt, img))
    inputs = _to_model(vlm, collate_left(exs, _pad_id(vlm)))
    n_prompt = inputs["input_ids"].shape[1]
    _check_context(vlm, n_prompt, max_new_tokens)
    out = vlm.model.generate(**inputs, **_gen_kwargs(vlm, max_new_tokens, 0.0))
    eos = set(_eos_ids(vlm))
    rows = []
    for row in out[:, n_prompt:].tolist():
        # drop what follows the first end-of-sequence (the padding of rows that finished early)
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def generate_batch(vlm, images: list, queries: list[str], *, max_new_tokens: int = 128,
                   conv_mode: str | None = None) -> list[str]:
    """Greedy answers for a batch (left padding); ``images`` may contain None (text only)."""
    rows = generate_batch_ids(vlm, images, queries, max_new_tokens=max_new_tokens, conv_mode=conv_mode)
    return [vlm.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]


class ChatSession:
    """Several turns about one image; each :meth:`ask` re-renders the whole conversation."""

    def __init__(self, vlm, image=None, *, conv_mode: str | None = None, max_new_tokens: int = 128,
                 temperature: float = 0.0):
        self.vlm, self.image, self.conv_mode = vlm, load_image(image), conv_mode
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.history: list[tuple[str, str]] = []
        self.last: Generation | None = None

    def ask(self, query: str) -> str:
        t0 = time.perf_counter()
        prompt = render_prompt(self.vlm, query, with_image=self.image is not None, conv_mode=self.conv_mode,
                               history=self.history)
        ex = encode_prompt(self.vlm, self.vlm.tokenizer, self.vlm.processor, prompt, self.image)
        inputs = _to_model(self.vlm, collate_left([ex], _pad_id(self.vlm)))
        self.last = generate_from_inputs(self.vlm, inputs, max_new_tokens=self.max_new_tokens,
                                         temperature=self.temperature, t0=t0)
        self.history.append((query, self.last.text))
        return self.last.text


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def footprint(vlm) -> dict[str, int]:
    """Weight bytes by part (each storage counted once, so a tied head is not counted twice)."""
    fam = vlm.adapter
    parts = {"language_model": 0, "vision": 0, "other": 0}
    seen: set[int] = set()
    named = list(vlm.model.named_parameters(remove_duplicate=False))
    named += [(n, b) for n, b in vlm.model.named_buffers(remove_duplicate=False)]
    for name, t in named:
        if t is None or t.device.type == "meta":
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("inv_freq", "original_inv_freq", "position_ids"):
            continue  # computed, not weights
        key = t.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        parts[fam.part_of(name)] += _nbytes(t)
    parts["total"] = sum(parts.values())
    return parts
