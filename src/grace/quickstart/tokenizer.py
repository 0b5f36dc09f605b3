"""The quickstart's tokenizer: a LLaVA-style SentencePiece BPE trained on one synthetic world.

Invariant: every string a prompt or answer of the world can contain is covered by whole pieces,
so sequences stay short (a tiny model on a CPU pays for every token): the chat template's fixed
text (system prompt + ``USER:``, ``ASSISTANT:``, both answer suffixes, ``\\n`` + each question's
first word, ``\\n`` + each option letter) are SentencePiece *user-defined symbols* (always one
token, never merged with a neighbour, so ``ASSISTANT:`` never swallows the supervised answer), and
the words of :func:`grace.data.synthetic.corpus` are learnt as BPE pieces. The files are those
of a real LLaVA-1.5 tokenizer (``tokenizer.model`` + ``tokenizer_config.json``), read by
transformers' ``LlamaTokenizer``; teacher and student share them (distillation needs one vocabulary).

    tok = train_tokenizer(world_cfg, "runs/qs/tokenizer")
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from grace.data.synthetic import MC_SUFFIX, SHORT_SUFFIX, WorldConfig, corpus
from grace.data.templates import TEMPLATES

VOCAB_SIZE = 1000  # an upper bound: training stops when the corpus has no more merges


def template_symbols(cfg: WorldConfig) -> list[str]:
    """The fixed strings of the vicuna_v1 template and the world's prompts (one token each)."""
    tpl = TEMPLATES["vicuna_v1"]
    syms = [tpl.system + " USER:", "ASSISTANT:", SHORT_SUFFIX, MC_SUFFIX]
    lines = corpus(cfg)
    firsts = sorted({ln.split()[0] for ln in lines if ln.endswith("?")})
    syms += ["\n" + w for w in firsts]
    syms += [f"\n{letter}." for letter in "ABCDE"]
    return syms


def train_tokenizer(cfg: WorldConfig, out_dir: str | Path):
    """Train, write ``out_dir/{tokenizer.model,tokenizer_config.json,special_tokens_map.json}``, load."""
    import sentencepiece as spm

    from grace.models.tiny_tokenizers import LLAMA_TOKENIZER_CONFIG

    syms = template_symbols(cfg)
    words = [p for ln in corpus(cfg) for p in ln.split("\n") if p.strip()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(words), model_writer=buf, vocab_size=VOCAB_SIZE, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, character_coverage=1.0,
        user_defined_symbols=syms, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        hard_vocab_limit=False, minloglevel=2,
    )
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.model").write_bytes(buf.getvalue())
    (d / "tokenizer_config.json").write_text(json.dumps(LLAMA_TOKENIZER_CONFIG, indent=2))
    (d / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}, indent=2))
    return load_tokenizer(d)


def load_tokenizer(d: str | Path):
    """The tokenizer written by :func:`train_tokenizer` (with the raw model kept for the saver)."""
    from transformers import AutoTokenizer

    d = Path(d)
    tok = AutoTokenizer.from_pretrained(str(d))
    # transformers 5 does not write tokenizer.model back on save; grace.io's original-layout
    # writer reads these bytes (as for grace.models.tiny_tokenizers).
    tok.grace_sp_model = (d / "tokenizer.model").read_bytes()
    return tok
