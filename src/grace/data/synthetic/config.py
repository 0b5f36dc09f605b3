"""The world's knobs (:class:`WorldConfig`) and its fixed vocabulary (palette, shapes, positions).

Invariant: every word the world can ever render, ask or answer is defined here (colour names,
shape names and plurals, grid-cell names), so the question generator, the corpus exported for the
tokenizer and the tests all read one source. The config is frozen, validated on creation and
round-trips through JSON; its canonical JSON hash is what makes :func:`generate_world` idempotent.

    cfg = WorldConfig(seed=1, n_train_images=500)
    cfg2 = WorldConfig.from_dict(cfg.to_dict())        # == cfg
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from grace.errors import GraceError

WORLD_VERSION = 1

# Colours sit far apart in RGB (pairwise distance > 100) so a 2-layer CLIP at 48 px can tell them
# apart from a handful of pixels; none is grey, so the grey background and the grey distractor
# dots never read as an object's colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 25, 35),
    "green": (30, 160, 50),
    "blue": (40, 80, 230),
    "yellow": (240, 240, 20),
    "purple": (150, 50, 200),
    "orange": (255, 135, 10),
    "pink": (250, 120, 200),
    "cyan": (30, 210, 220),
}
# Plural forms used by the count questions ("How many crosses are there?").
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "cross": "crosses",
    "diamond": "diamonds",
    "star": "stars",
}
# Grid cells in reading order. Names are answers, so they avoid hyphens (the VQA normaliser would
# turn "top-left" into "top left" anyway) and each cell has exactly one name.
POSITION_NAMES: dict[int, tuple[str, ...]] = {
    2: ("top left", "top right", "bottom left", "bottom right"),
    3: (
        "top left", "top middle", "top right",
        "middle left", "center", "middle right",
        "bottom left", "bottom middle", "bottom right",
    ),
}
CATEGORIES: tuple[str, ...] = ("colour", "shape", "count", "position", "existence")
KINDS: tuple[str, ...] = ("short", "yesno", "mc")
SPLITS: tuple[str, ...] = ("train", "val", "test")
SIZES: tuple[str, ...] = ("small", "large")

SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
MC_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
OPTION_LETTERS = "ABCDE"
CAPTION_PROMPT = "Describe the image."


class WorldConfigError(GraceError, ValueError):
    """An invalid :class:`WorldConfig` field; the message names the field."""


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a synthetic VQA world (same config -> byte-identical files).

    seed:                master seed; every split / image / question draws from a stream
                         derived from it, so the test split does not change with n_train_images.
    n_*_images:          images per split; train/val/test never share an image or a scene.
    questions_per_image: questions asked about each image (categories rotate so each category
                         gets the same share).
    image_size / grid:   square canvas in pixels, cut into grid x grid cells (2 or 3); each object
                         sits in its own cell. 48 px with a 3x3 grid keeps a small shape ~8 px.
    min/max_objects:     objects per scene (the count answers range over 0..max_objects).
    sizes:               object sizes drawn from ("small", "large"); a large shape nearly fills
                         its cell (little jitter), a small one is half a cell and moves around it.
    shapes / colors:     the vocabulary in play (subsets of SHAPE_PLURALS / PALETTE).
    categories:          question categories enabled (subset of CATEGORIES).
    mc_fraction:         share of colour/shape/count/position questions asked as multiple choice.
    n_options:           options per multiple-choice question (fewer if the category has fewer).
    attribute_skew:      Zipf exponent for colour and shape frequencies (0 = uniform); a mild
                         skew gives "popular" objects for POPE-style negatives and a non-trivial
                         answer prior, as real data has.
    noise:               amplitude of uniform per-pixel noise (0 = clean images).
    max_distractors:     up to this many 1-pixel grey dots per image (clutter that is not an object).
    train_multi_turn:    False: one single-turn conversation per question (simplest for a tiny
                         model); True: one conversation per image holding all its QA turns.
    train_captions:      also give every training image a caption conversation ("Describe the
                         image." -> "a red circle in the top left and a blue square in the bottom
                         right"), the dense object-by-object supervision of LLaVA's caption
                         pre-training; it is what lets a from-scratch vision tower learn to see
                         here. Evaluation splits never hold captions.
    """

    seed: int = 0
    n_train_images: int = 3000
    n_val_images: int = 300
    n_test_images: int = 300
    questions_per_image: int = 4
    image_size: int = 48
    grid: int = 3
    min_objects: int = 1
    max_objects: int = 4
    sizes: tuple[str, ...] = SIZES
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "cross")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    categories: tuple[str, ...] = CATEGORIES
    mc_fraction: float = 0.3
    n_options: int = 4
    attribute_skew: float = 0.5
    noise: int = 6
    max_distractors: int = 3
    train_multi_turn: bool = False
    train_captions: bool = False
    version: int = field(default=WORLD_VERSION)

    def __post_init__(self) -> None:
        for name in ("sizes", "shapes", "colors", "categories"):
            value = getattr(self, name)
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise WorldConfigError(f"WorldConfig.{name} must be a list of names; got {value!r}")
            object.__setattr__(self, name, tuple(value))
        ints = ("seed", "n_train_images", "n_val_images", "n_test_images", "questions_per_image",
                "image_size", "grid", "min_objects", "max_objects", "n_options", "noise",
                "max_distractors", "version")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or (v < 0 and name != "seed"):
                raise WorldConfigError(f"WorldConfig.{name} must be a non-negative int; got {v!r}")
        if self.version > WORLD_VERSION:
            raise WorldConfigError(f"WorldConfig.version {self.version} is newer than this grace "
                                   f"({WORLD_VERSION})")
        if max(self.n_train_images, self.n_val_images, self.n_test_images) > 999_999:
            raise WorldConfigError("WorldConfig.n_*_images must be <= 999999 (six-digit image names)")
        if self.n_test_images < 1:
            raise WorldConfigError("WorldConfig.n_test_images must be >= 1")
        if self.questions_per_image < 1:
            raise WorldConfigError("WorldConfig.questions_per_image must be >= 1")
        if self.grid not in POSITION_NAMES:
            raise WorldConfigError(f"WorldConfig.grid must be one of {sorted(POSITION_NAMES)}; got {self.grid}")
        # A small object is half a cell wide; below 4 px circle/square/triangle stop being distinct.
        if self.image_size / self.grid / 2 < 4 or self.image_size > 1024:
            raise WorldConfigError(
                f"WorldConfig.image_size {self.image_size} is out of range for grid {self.grid} "
                f"(need image_size/grid >= 8 and image_size <= 1024)")
        bad = [s for s in self.shapes if s not in SHAPE_PLURALS]
        if bad or len(set(self.shapes)) != len(self.shapes) or len(self.shapes) < 2:
            raise WorldConfigError(f"WorldConfig.shapes must be >= 2 distinct names from "
                                   f"{sorted(SHAPE_PLURALS)}; got {list(self.shapes)}")
        bad = [c for c in self.colors if c not in PALETTE]
        if bad or len(set(self.colors)) != len(self.colors) or len(self.colors) < 2:
            raise WorldConfigError(f"WorldConfig.colors must be >= 2 distinct names from "
                                   f"{sorted(PALETTE)}; got {list(self.colors)}")
        if not self.sizes or len(set(self.sizes)) != len(self.sizes) or any(z not in SIZES for z in self.sizes):
            raise WorldConfigError(f"WorldConfig.sizes must be distinct names from {list(SIZES)}; got {list(self.sizes)}")
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad or not self.categories or len(set(self.categories)) != len(self.categories):
            raise WorldConfigError(f"WorldConfig.categories must be distinct names from {list(CATEGORIES)}; "
                                   f"got {list(self.categories)}")
        n_cells = self.grid * self.grid
        if not 1 <= self.min_objects <= self.max_objects:
            raise WorldConfigError(f"WorldConfig.min_objects/max_objects must satisfy 1 <= min <= max; "
                                   f"got {self.min_objects}, {self.max_objects}")
        # Objects occupy distinct cells and distinct (colour, shape) pairs, so "Where is the red
        # circle?" always has exactly one answer.
        if self.max_objects > min(n_cells, len(self.shapes) * len(self.colors)):
            raise WorldConfigError(f"WorldConfig.max_objects {self.max_objects} exceeds the {n_cells} grid cells "
                                   f"or the number of colour/shape pairs")
        if not 0.0 <= float(self.mc_fraction) <= 1.0:
            raise WorldConfigError(f"WorldConfig.mc_fraction must lie in [0, 1]; got {self.mc_fraction}")
        if not 2 <= self.n_options <= len(OPTION_LETTERS):
            raise WorldConfigError(f"WorldConfig.n_options must lie in [2, {len(OPTION_LETTERS)}]; "
                                   f"got {self.n_options}")
        if not 0.0 <= float(self.attribute_skew) <= 4.0:
            raise WorldConfigError(f"WorldConfig.attribute_skew must lie in [0, 4]; got {self.attribute_skew}")
        if self.noise > 64:
            raise WorldConfigError(f"WorldConfig.noise must lie in [0, 64]; got {self.noise}")
        object.__setattr__(self, "mc_fraction", float(self.mc_fraction))
        object.__setattr__(self, "attribute_skew", float(self.attribute_skew))

    # ---- derived vocabulary -------------------------------------------------------------------
    @property
    def positions(self) -> tuple[str, ...]:
        return POSITION_NAMES[self.grid]

    @property
    def count_answers(self) -> tuple[str, ...]:
        # Digits, not words: the VQA normaliser maps "two" -> "2", so digits are the canonical form.
        return tuple(str(i) for i in range(self.max_objects + 1))

    def n_images(self, split: str) -> int:
        return {"train": self.n_train_images, "val": self.n_val_images, "test": self.n_test_images}[split]

    # ---- serialisation ------------------------------------------------------------------------
    def replace(self, **changes: Any) -> WorldConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("sizes", "shapes", "colors", "categories"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise WorldConfigError(f"unknown WorldConfig fields: {sorted(unknown)}")
        return cls(**d)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON; equal fingerprints mean identical worlds."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
