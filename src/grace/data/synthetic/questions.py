"""Questions about a scene, with answers that are exact by construction, and the corpus they span.

Invariant: every question is produced from a *template id + parameters* (recorded with it), and its
answer is computed from the scene record alone; a template is only used when its referent is
unique in the scene ("the circle" only if there is one circle), so each question has exactly one
correct answer. The set of sentences a template can produce is finite, and :func:`corpus`
enumerates all of them, so the tiny tokenizer trained on the corpus covers every prompt and answer.

Forms (BENCHMARKS.md §1): short answer = question + :data:`SHORT_SUFFIX`; multiple choice =
question + ``"\\n{letter}. {option}"`` lines + :data:`MC_SUFFIX`, answered by the letter; existence
questions are POPE-style yes/no with the short suffix.

    rng = random.Random(0)
    q = ask(scene, "colour", cfg, rng, mc=False)
    q.text, q.label                                 # "What color is the circle?\\nAnswer ...", "red"
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from grace.data.synthetic.config import (
    CAPTION_PROMPT,
    MC_SUFFIX,
    OPTION_LETTERS,
    SHAPE_PLURALS,
    SHORT_SUFFIX,
    WorldConfig,
)
from grace.data.synthetic.scene import Scene, zipf_weights
from grace.errors import GraceError

# Template id -> English pattern. Params are filled with str.format.
TEMPLATES: dict[str, str] = {
    "color_of_shape": "What color is the {shape}?",
    "color_at": "What color is the shape in the {position}?",
    "color_side": "What color is the shape on the {side}?",
    "shape_of_color": "What shape is the {color} object?",
    "shape_at": "What shape is in the {position}?",
    "shape_side": "What shape is on the {side}?",
    "count_all": "How many shapes are there?",
    "count_color": "How many {color} shapes are there?",
    "count_shape": "How many {plural} are there?",
    "where": "Where is the {color} {shape}?",
    "exists": "Is there {article} {color} {shape} in the image?",
}
CATEGORY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("color_of_shape", "color_at", "color_side"),
    "shape": ("shape_of_color", "shape_at", "shape_side"),
    "count": ("count_all", "count_color", "count_shape"),
    "position": ("where",),
    "existence": ("exists",),
}
SIDES = ("left", "right")
NEGATIVE_TYPES = ("random", "popular", "adversarial")


@dataclass(frozen=True)
class Question:
    category: str
    kind: str                      # "short" | "yesno" | "mc"
    question: str                  # the bare sentence, no suffix
    answer: str                    # the answer text (for mc: the correct option's text)
    template: str
    params: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()  # mc only, in display order
    negative: str | None = None    # existence "no" questions: how the absent object was chosen

    @property
    def text(self) -> str:
        """The full user text, without ``<image>``, with the LLaVA suffix."""
        if self.kind == "mc":
            lines = "".join(f"\n{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(self.options))
            return self.question + lines + MC_SUFFIX
        return self.question + SHORT_SUFFIX

    @property
    def label(self) -> str:
        """What the model must answer: the word/phrase, "yes"/"no", or the option letter."""
        if self.kind == "mc":
            return OPTION_LETTERS[self.options.index(self.answer)]
        return self.answer


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def category_vocabulary(category: str, cfg: WorldConfig) -> tuple[str, ...]:
    """All answers a category can have (also the pool multiple-choice options are drawn from)."""
    if category == "colour":
        return cfg.colors
    if category == "shape":
        return cfg.shapes
    if category == "count":
        return cfg.count_answers
    if category == "position":
        return cfg.positions
    if category == "existence":
        return ("yes", "no")
    raise GraceError(f"synthetic world: unknown question category {category!r}")


def _side_objects(scene: Scene, grid: int):
    """For two objects in different columns: (left object, right object); else None."""
    if len(scene.objects) != 2:
        return None
    a, b = scene.objects
    if a.column(grid) == b.column(grid):
        return None
    return (a, b) if a.column(grid) < b.column(grid) else (b, a)


def _valid_templates(scene: Scene, category: str, grid: int) -> list[str]:
    shapes = [o.shape for o in scene.objects]
    colors = [o.color for o in scene.objects]
    ok = []
    for t in CATEGORY_TEMPLATES[category]:
        if t == "color_of_shape" and not any(shapes.count(s) == 1 for s in shapes):
            continue
        if t == "shape_of_color" and not any(colors.count(c) == 1 for c in colors):
            continue
        if t in ("color_side", "shape_side") and _side_objects(scene, grid) is None:
            continue
        ok.append(t)
    return ok


def _existence(scene: Scene, cfg: WorldConfig, rng: random.Random, want_yes: bool,
               negative: str) -> tuple[dict, str, str | None]:
    present = [(o.color, o.shape) for o in scene.objects]
    if want_yes:
        color, shape = rng.choice(present)
        return {"color": color, "shape": shape}, "yes", None
    absent = [(c, s) for c in cfg.colors for s in cfg.shapes if (c, s) not in present]
    if negative == "adversarial":
        # Hard negative: shares a colour or a shape with something in the image.
        near = [p for p in absent if any(p[0] == q[0] or p[1] == q[1] for q in present)]
        pool = near or absent
    elif negative == "popular":
        # POPE "popular": among the most frequent objects of the world (by the attribute prior).
        cw = dict(zip(cfg.colors, zipf_weights(len(cfg.colors), cfg.attribute_skew), strict=True))
        sw = dict(zip(cfg.shapes, zipf_weights(len(cfg.shapes), cfg.attribute_skew), strict=True))
        ranked = sorted(absent, key=lambda p: (-cw[p[0]] * sw[p[1]], cfg.colors.index(p[0]),
                                               cfg.shapes.index(p[1])))
        pool = ranked[:3]
    else:
        pool = absent
    color, shape = rng.choice(pool)
    return {"color": color, "shape": shape}, "no", negative


def derive_answer(scene: Scene, template: str, params: dict, grid: int) -> str:
    """The answer of a (template, params) question on a scene: the single source of truth."""
    objs = scene.objects
    if template == "color_of_shape":
        (o,) = [o for o in objs if o.shape == params["shape"]]
        return o.color
    if template == "color_at":
        (o,) = [o for o in objs if o.position(grid) == params["position"]]
        return o.color
    if template in ("color_side", "shape_side"):
        o = _side_objects(scene, grid)[SIDES.index(params["side"])]
        return o.color if template == "color_side" else o.shape
    if template == "shape_of_color":
        (o,) = [o for o in objs if o.color == params["color"]]
        return o.shape
    if template == "shape_at":
        (o,) = [o for o in objs if o.position(grid) == params["position"]]
        return o.shape
    if template == "count_all":
        return str(len(objs))
    if template == "count_color":
        return str(sum(o.color == params["color"] for o in objs))
    if template == "count_shape":
        return str(sum(o.shape == params["shape"] for o in objs))
    if template == "where":
        (o,) = [o for o in objs if (o.color, o.shape) == (params["color"], params["shape"])]
        return o.position(grid)
    if template == "exists":
        return "yes" if any((o.color, o.shape) == (params["color"], params["shape"]) for o in objs) else "no"
    raise GraceError(f"synthetic world: unknown template {template!r}")


def render_question(template: str, params: dict) -> str:
    p = dict(params)
    if "shape" in p:
        p["plural"] = SHAPE_PLURALS[p["shape"]]
    if "color" in p:
        p["article"] = article(p["color"])
    return TEMPLATES[template].format(**p)


def ask(scene: Scene, category: str, cfg: WorldConfig, rng: random.Random, *, mc: bool = False,
        want_yes: bool = True, negative: str = "random") -> Question:
    """One question of ``category`` about ``scene``; ``want_yes``/``negative`` steer existence questions."""
    grid = cfg.grid
    if category == "existence":
        params, answer, neg = _existence(scene, cfg, rng, want_yes, negative)
        return Question("existence", "yesno", render_question("exists", params), answer, "exists",
                        params, negative=neg)
    template = rng.choice(_valid_templates(scene, category, grid))
    objs = scene.objects
    if template == "color_of_shape":
        shapes = [o.shape for o in objs]
        params = {"shape": rng.choice([s for s in shapes if shapes.count(s) == 1])}
    elif template == "shape_of_color":
        colors = [o.color for o in objs]
        params = {"color": rng.choice([c for c in colors if colors.count(c) == 1])}
    elif template in ("color_at", "shape_at"):
        params = {"position": rng.choice(objs).position(grid)}
    elif template in ("color_side", "shape_side"):
        params = {"side": rng.choice(SIDES)}
    elif template == "count_color":
        # Half the time a colour in the image, half the time any colour (so "0" is an answer too).
        params = {"color": rng.choice(objs).color if rng.random() < 0.5 else rng.choice(cfg.colors)}
    elif template == "count_shape":
        params = {"shape": rng.choice(objs).shape if rng.random() < 0.5 else rng.choice(cfg.shapes)}
    elif template == "where":
        o = rng.choice(objs)
        params = {"color": o.color, "shape": o.shape}
    else:  # count_all
        params = {}
    answer = derive_answer(scene, template, params, grid)
    options: tuple[str, ...] = ()
    if mc:
        pool = [v for v in category_vocabulary(category, cfg) if v != answer]
        k = min(cfg.n_options, len(pool) + 1) - 1
        opts = [answer, *rng.sample(pool, k)]
        rng.shuffle(opts)
        options = tuple(opts)
    return Question(category, "mc" if mc else "short", render_question(template, params), answer,
                    template, params, options)


def _template_params(template: str, cfg: WorldConfig) -> list[dict]:
    """Every parameter combination a template can take under ``cfg`` (for the corpus)."""
    if template == "color_of_shape" or template == "count_shape":
        return [{"shape": s} for s in cfg.shapes]
    if template in ("shape_of_color", "count_color"):
        return [{"color": c} for c in cfg.colors]
    if template in ("color_at", "shape_at"):
        return [{"position": p} for p in cfg.positions]
    if template in ("color_side", "shape_side"):
        return [{"side": s} for s in SIDES]
    if template in ("where", "exists"):
        return [{"color": c, "shape": s} for c in cfg.colors for s in cfg.shapes]
    return [{}]


def caption(scene: Scene, grid: int) -> str:
    """The scene's caption: every object as "a {colour} {shape} in the {position}", in reading order."""
    objs = sorted(scene.objects, key=lambda o: o.cell)
    return " and ".join(_caption_phrase(o.color, o.shape, o.position(grid)) for o in objs)


def _caption_phrase(color: str, shape: str, position: str) -> str:
    return f"a {color} {shape} in the {position}"


def corpus(cfg: WorldConfig | None = None) -> list[str]:
    """Every question sentence, suffix, option line and answer the world can emit (sorted, unique).

    corpus()            # for the default WorldConfig; train a tokenizer on these lines
    """
    cfg = cfg or WorldConfig()
    lines: set[str] = {SHORT_SUFFIX.strip(), MC_SUFFIX.strip(), "yes", "no"}
    for category in cfg.categories:
        for t in CATEGORY_TEMPLATES[category]:
            lines.update(render_question(t, p) for p in _template_params(t, cfg))
        vocab = category_vocabulary(category, cfg)
        lines.update(vocab)
        if category != "existence":
            n = min(cfg.n_options, len(vocab))
            lines.update(OPTION_LETTERS[:n])
            lines.update(f"{OPTION_LETTERS[i]}. {v}" for i in range(n) for v in vocab)
    if cfg.train_captions:
        lines.add(CAPTION_PROMPT)
        lines.update(_caption_phrase(c, s, p) for c in cfg.colors for s in cfg.shapes for p in cfg.positions)
        lines.add("and")
    return sorted(lines)
