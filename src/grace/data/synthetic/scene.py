"""Scenes: sampled as plain data, rendered by one pure function.

Invariant: a :class:`Scene` holds *everything* the image depends on (object centres and
diameters, background grey, distractor dots, the noise seed), so :func:`render` is a pure function
of (scene, image_size) and the question generator can derive exact answers from the same record
the renderer used. Scenes are written next to the images (``{split}_scenes.jsonl``) so any answer
can be re-derived and any image re-rendered later.

Geometry: the canvas is cut into ``grid x grid`` cells; each object owns one cell, is centred on a
pixel centre inside it (a small jitter keeps positions from being a lookup table) and never leaves
it. Shapes are drawn at 4x resolution and box-filtered down, so edges are anti-aliased while every
pixel fully inside a shape keeps the exact palette colour (before noise).

    rng = random.Random("demo")
    scene = sample_scene(WorldConfig(), rng)
    image = render(scene, 48)                      # PIL RGB image, 48 x 48
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from grace.data.synthetic.config import PALETTE, POSITION_NAMES, WorldConfig
from grace.errors import GraceError

SUPERSAMPLE = 4
# Object diameter as a fraction of the cell side: large shapes fill most of the cell, small ones
# about half of it, so "small" and "large" differ by ~1.6x and a small shape is still ~8 px at 48 px.
SIZE_FRACTION = {"small": 0.5, "large": 0.8}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    cell: int          # index into the grid in reading order
    cx: float          # centre in output pixels (always k + 0.5: a pixel centre)
    cy: float
    diameter: float    # bounding-box side in output pixels

    def position(self, grid: int) -> str:
        return POSITION_NAMES[grid][self.cell]

    def column(self, grid: int) -> int:
        return self.cell % grid

    def to_dict(self, grid: int) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size,
                "position": self.position(grid), "cell": self.cell,
                "center": [self.cx, self.cy], "diameter": self.diameter}


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: int                              # grey level of the plain background
    distractors: tuple[tuple[int, int, int], ...]  # (x, y, grey) single-pixel dots, not objects
    noise_seed: int

    @property
    def signature(self) -> tuple:
        """What makes two scenes "the same" to a question: objects' attributes and cells (not jitter)."""
        return tuple(sorted((o.cell, o.shape, o.color, o.size) for o in self.objects))

    def to_dict(self, grid: int) -> dict:
        return {"objects": [o.to_dict(grid) for o in self.objects], "background": self.background,
                "distractors": [list(d) for d in self.distractors], "noise_seed": self.noise_seed}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        objs = tuple(SceneObject(o["shape"], o["color"], o["size"], int(o["cell"]),
                                 float(o["center"][0]), float(o["center"][1]), float(o["diameter"]))
                     for o in d["objects"])
        return cls(objs, int(d["background"]), tuple(tuple(int(v) for v in x) for x in d["distractors"]),
                   int(d["noise_seed"]))


def zipf_weights(n: int, skew: float) -> list[float]:
    """Relative frequencies of n ranked items: rank r gets 1/(r+1)^skew (skew 0 = uniform)."""
    return [1.0 / (r + 1) ** skew for r in range(n)]


def sample_scene(cfg: WorldConfig, rng: random.Random) -> Scene:
    """Draw one scene: distinct cells, distinct (colour, shape) pairs, jittered pixel-centred positions."""
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    cells = rng.sample(range(cfg.grid * cfg.grid), n)
    cw, sw = zipf_weights(len(cfg.colors), cfg.attribute_skew), zipf_weights(len(cfg.shapes), cfg.attribute_skew)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        # Distinct pairs make "Where is the red circle?" unambiguous; rejection is cheap because
        # n is at most 4 among 24 pairs by default.
        pair = (rng.choices(cfg.colors, cw)[0], rng.choices(cfg.shapes, sw)[0])
        if pair not in pairs:
            pairs.append(pair)
    cell_px = cfg.image_size / cfg.grid
    objects = []
    for cell, (color, shape) in zip(cells, pairs, strict=True):
        size = rng.choice(cfg.sizes)
        d = SIZE_FRACTION[size] * cell_px
        row, col = divmod(cell, cfg.grid)
        # Leave >= 1 px between the shape and the cell border after snapping to a pixel centre.
        margin = max(0.0, (cell_px - d) / 2 - 1.0)
        cx = col * cell_px + cell_px / 2 + rng.uniform(-margin, margin)
        cy = row * cell_px + cell_px / 2 + rng.uniform(-margin, margin)
        objects.append(SceneObject(shape, color, size, cell, math.floor(cx) + 0.5, math.floor(cy) + 0.5, d))
    background = rng.randint(205, 245)
    dots = tuple((rng.randrange(cfg.image_size), rng.randrange(cfg.image_size), rng.randint(60, 120))
                 for _ in range(rng.randint(0, cfg.max_distractors)))
    return Scene(tuple(objects), background, dots, rng.getrandbits(32))


def sample_split(cfg: WorldConfig, split: str, taken: set) -> list[Scene]:
    """All scenes of one split, from the split's own stream, skipping signatures in ``taken``.

    Each split draws from ``Random("{seed}:{split}")``, so the test split is fixed by the seed and
    n_test_images alone. ``taken`` holds the signatures of the splits sampled before; it is updated
    in place, which keeps the same scene out of two splits.
    """
    rng = random.Random(f"grace-synthvqa:{cfg.seed}:{split}:scenes")
    n = cfg.n_images(split)
    own: set = set()
    scenes: list[Scene] = []
    rejected, budget = 0, 200 * n + 1000
    while len(scenes) < n:
        scene = sample_scene(cfg, rng)
        if scene.signature in taken:
            rejected += 1
            if rejected > budget:
                raise GraceError(
                    f"synthetic world: cannot find {n} {split} scenes disjoint from the other splits; "
                    f"the scene space is too small (raise WorldConfig.max_objects or grid, or lower n_images)")
            continue
        scenes.append(scene)
        own.add(scene.signature)
    taken |= own
    return scenes


# ---- rendering ----------------------------------------------------------------------------------
def _shape_polygons(shape: str, cx: float, cy: float, d: float) -> list[list[tuple[float, float]]]:
    """Filled polygons (supersampled coordinates) whose union is the shape; the centre is inside all."""
    r = d / 2
    if shape == "square":
        h = 0.86 * r  # a square of side d looks bigger than a circle of diameter d
        return [[(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]]
    if shape == "triangle":
        return [[(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]]
    if shape == "diamond":
        return [[(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]]
    if shape == "cross":
        t = 0.19 * d  # arm half-thickness: thick enough that a small cross is not two lines
        return [[(cx - r, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx - r, cy + t)],
                [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy + r), (cx - t, cy + r)]]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return [pts]
    raise GraceError(f"synthetic world: unknown shape {shape!r}")


def render(scene: Scene, image_size: int, noise: int = 0) -> Image.Image:
    """Draw a scene as an RGB image of ``image_size`` pixels (pure: same scene -> same pixels)."""
    s = SUPERSAMPLE
    bg = scene.background
    img = Image.new("RGB", (image_size * s, image_size * s), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    # Distractors first: an object drawn over a dot hides it, never the other way round.
    for x, y, g in scene.distractors:
        draw.rectangle([x * s, y * s, x * s + s - 1, y * s + s - 1], fill=(g, g, g))
    for o in scene.objects:
        color = PALETTE[o.color]
        if o.shape == "circle":
            r = o.diameter * s / 2
            draw.ellipse([o.cx * s - r, o.cy * s - r, o.cx * s + r, o.cy * s + r], fill=color)
        else:
            for poly in _shape_polygons(o.shape, o.cx * s, o.cy * s, o.diameter * s):
                draw.polygon(poly, fill=color)
    # BOX over an integer factor is the exact block mean: interiors stay pure, edges blend.
    img = img.resize((image_size, image_size), Image.Resampling.BOX)
    if noise:
        arr = np.asarray(img, dtype=np.int16)
        rng = np.random.default_rng(scene.noise_seed)
        arr = arr + rng.integers(-noise, noise + 1, size=arr.shape, dtype=np.int16)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img
