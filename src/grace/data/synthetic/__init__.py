"""A procedurally generated VQA world for running the whole GRACE pipeline without downloads.

Invariant: a :class:`WorldConfig` determines every byte of a world (images, questions, answers,
files), answers are exact by construction (derived from the scene record that was rendered), and
train / val / test never share an image or a scene. See docs/synthetic.md for the design and the
file formats (LLaVA conversation JSON for training; LLaVA-style question + annotation jsonl for
the ``synthvqa`` benchmark).

    from grace.data.synthetic import WorldConfig, generate_world, corpus
    info = generate_world(WorldConfig(seed=0), "runs/world")   # ~3600 PNGs, reused if present
    lines = corpus()                                           # text to train a tiny tokenizer on
"""

from grace.data.synthetic.config import (
    CATEGORIES,
    KINDS,
    MC_SUFFIX,
    PALETTE,
    SHORT_SUFFIX,
    WorldConfig,
    WorldConfigError,
)
from grace.data.synthetic.questions import Question, ask, corpus, derive_answer
from grace.data.synthetic.scene import Scene, SceneObject, render, sample_scene
from grace.data.synthetic.world import (
    answer_prior,
    contact_sheet,
    generate_world,
    load_world,
    read_jsonl,
    world_answer_prior,
)

__all__ = [
    "CATEGORIES",
    "KINDS",
    "MC_SUFFIX",
    "PALETTE",
    "SHORT_SUFFIX",
    "Question",
    "Scene",
    "SceneObject",
    "WorldConfig",
    "WorldConfigError",
    "answer_prior",
    "ask",
    "contact_sheet",
    "corpus",
    "derive_answer",
    "generate_world",
    "load_world",
    "read_jsonl",
    "render",
    "sample_scene",
    "world_answer_prior",
]
