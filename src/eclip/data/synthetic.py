"""Seeded procedural scenes with exact masks: the offline benchmark and the bundled models' training data.

Why drawn by hand: every metric eclip reports (mIoU, score contrast, pointing game) is only as good as
its ground truth. Here the geometry of each object is rasterised with numpy at pixel centres (no
antialiasing) into an instance map, and the image is then painted *through* that map, so an object's
mask is by construction exactly the set of pixels painted with its fill. Nothing is approximated.

A scene: a named background (its name appears in the caption), optional clutter (thin lines and
dots that belong to no class and to no mask: they are background), then 1..N shapes drawn in
order, later ones over earlier ones. Masks hold the *visible* pixels. An object left with fewer
than `min_visible_pixels` visible pixels, or less than `min_visible_fraction` of its own area,
is **dropped**: it is not drawn at all (the scene is composed again without it, which only
uncovers the others), is not in the caption, and is counted in `Scene.dropped`. So every object
a caption names can be seen, and no mask holds a sliver nobody could recognise.

Seeds: `render_scene(seed)` is a pure function of (seed, config). Scene `i` of a dataset or stream
with seed `S` uses `scene_seed(S, i)`, a numpy `SeedSequence` child, so datasets with different
seeds do not share scenes and any scene can be rendered on its own (batch `i` of a resumed
training run is the batch it would have been).

Folder layout written by `write_dataset` and read by `SyntheticDataset`::

    root/meta.json            format, version, classnames, n, seed, config (written last)
    root/annotations.json     {"images": [{id, seed, caption, background, dropped, objects: [...]}]}
    root/images/000000.png    RGB uint8
    root/masks/000000.png     uint8 class index: 0 background, i + 1 = CLASSNAMES[i]
    root/instances/000000.png uint8 instance index: 0 background, k = objects[k - 1]
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from eclip.data.sample import Sample
from eclip.errors import DatasetError, EclipError
from eclip.writing import atomic_write, atomic_write_text, remove_stale_temps, temp_target

logger = logging.getLogger(__name__)

FORMAT = "eclip-synthetic"
FORMAT_VERSION = 1

#: The shape classes, in the fixed order of the class-index masks (index i + 1 = CLASSNAMES[i]).
CLASSNAMES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "heart", "ring", "crescent")

#: Object colours: saturated, far from each other and from every background colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 210, 40),
    "orange": (245, 135, 25),
    "purple": (140, 55, 190),
    "pink": (245, 120, 185),
    "cyan": (40, 200, 215),
}

#: Background patterns; the name is the word the caption uses ("on a striped background").
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "checkered", "dotted", "noisy", "gradient", "grid")

# Muted background tones: no saturated hue, so shapes stand out and no flat fill equals a background.
_BACKGROUND_TONES = np.array(
    [(205, 205, 205), (150, 150, 150), (95, 95, 100), (228, 218, 195), (195, 178, 145),
     (110, 118, 135), (160, 168, 145), (190, 202, 215), (60, 60, 64), (238, 236, 230)],
    dtype=np.float32,
)
_CLUTTER_TONES = np.array([(20, 20, 20), (250, 250, 250), (110, 85, 60), (128, 128, 128)], dtype=np.float32)

#: Caption templates. Fields: objects ("a red star and a blue circle"), next_to ("a red star next to
#: a blue circle"), count ("two"), shapes ("shape" / "shapes"), background ("striped").
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {objects} on a {background} background",
    "{objects} on a {background} background",
    "{next_to}",
    "{count} {shapes}: {objects}",
    "a {background} background with {objects}",
    "a picture of {objects}",
)

#: The templates that name no background: captions that describe the objects only. A pooled
#: embedding read from the foreground alone can match them (ECLIP ablation, `--captions objects`).
OBJECT_CAPTION_TEMPLATES: tuple[str, ...] = tuple(t for t in CAPTION_TEMPLATES if "{background}" not in t)

#: The object templates plus one that names the shapes alone, in the words of the zero-shot prompt
#: ("a photo of a star." for a scene of one star): a test of whether the ITSM's inversion lives in
#: the part of text space that the training captions never reach (README, "Where the shift lives").
SHAPE_CAPTION_TEMPLATES: tuple[str, ...] = OBJECT_CAPTION_TEMPLATES + ("a photo of {shape_list}.",)

#: The caption sets `--captions` chooses from.
CAPTION_SETS: dict[str, tuple[str, ...]] = {"all": CAPTION_TEMPLATES, "objects": OBJECT_CAPTION_TEMPLATES,
                                            "shapes": SHAPE_CAPTION_TEMPLATES}

#: Seeds of the streams the bundled models were trained on; every other seed is held out.
TRAIN_SEEDS = (1000, 1001)
#: Held-out scenes on which ECLIP's settings are chosen (the ablation's validation set).
VALIDATION_SEED = 4242
#: Held-out scenes on which results are reported (`eclip shift`'s default, the README tables).
TEST_SEED = 777

#: The zero-shot prompt template for the shape classes.
PROMPT_TEMPLATE = "a photo of a {}."

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Sizes of objects are fractions of the image side, so one config scales.

    Attributes:
        image_size: pixels per side (square images).
        min_objects, max_objects: objects drawn per scene, uniform in [min, max] (before dropping).
        min_size, max_size: object diameter as a fraction of `image_size`.
        max_rotation: objects are rotated uniformly in [-max_rotation, max_rotation] degrees
            (hearts at most 30 degrees, so they stay recognisably upright).
        max_clutter: distractor marks (lines, dots) per scene, uniform in [0, max_clutter].
        texture: amplitude of the fill shading (0 gives flat fills of the exact named colour).
        min_visible_fraction, min_visible_pixels: an object less visible than this is dropped.
        shapes, colours, backgrounds: the subsets to draw from (names from CLASSNAMES, COLOURS, BACKGROUNDS).
        caption_templates: the templates a caption is drawn from (one per scene, uniformly).
    """

    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 3
    min_size: float = 0.18
    max_size: float = 0.4
    max_rotation: float = 180.0
    max_clutter: int = 4
    texture: float = 0.12
    min_visible_fraction: float = 0.3
    min_visible_pixels: int = 12
    shapes: tuple[str, ...] = CLASSNAMES
    colours: tuple[str, ...] = tuple(COLOURS)
    backgrounds: tuple[str, ...] = BACKGROUNDS
    caption_templates: tuple[str, ...] = CAPTION_TEMPLATES

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < 16:
            problems.append(f"image_size={self.image_size} must be >= 16")
        if not 1 <= self.min_objects <= self.max_objects <= 255:
            problems.append(f"objects {self.min_objects}..{self.max_objects} must satisfy 1 <= min <= max <= 255")
        if not 0 < self.min_size <= self.max_size <= 1:
            problems.append(f"sizes {self.min_size}..{self.max_size} must satisfy 0 < min <= max <= 1")
        if self.max_clutter < 0 or self.texture < 0 or not 0 <= self.min_visible_fraction <= 1:
            problems.append("max_clutter, texture must be >= 0 and min_visible_fraction in [0, 1]")
        for name, chosen, known in (("shapes", self.shapes, CLASSNAMES), ("colours", self.colours, tuple(COLOURS)),
                                    ("backgrounds", self.backgrounds, BACKGROUNDS)):
            unknown = [c for c in chosen if c not in known]
            if not chosen or unknown:
                problems.append(f"{name}={list(chosen)} must be a non-empty subset of {list(known)}")
        if not self.caption_templates:
            problems.append("caption_templates must not be empty")
        if problems:
            raise DatasetError("invalid SceneConfig: " + "; ".join(problems) + "; fix these options")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (lists for tuples), as stored in meta.json."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SceneConfig:
        """Inverse of `to_dict`; unknown keys are an error rather than silently ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DatasetError(f"unknown SceneConfig keys {unknown}; known keys are {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class SceneObject:
    """One drawn object. `bbox` is (x0, y0, x1, y1) of its visible pixels, slice-style (end exclusive)."""

    instance: int
    shape: str
    colour: str
    center: tuple[float, float]
    diameter: float
    rotation: float
    area: int
    visible_area: int
    bbox: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Scene:
    """A rendered scene.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        instances: (H, W) int32; 0 background, k for `objects[k - 1]`.
        class_masks: shape name -> (H, W) bool, for the classes present only.
        objects: the drawn objects, in drawing order.
        background: the background's name (as in the caption).
        caption: one caption from the config's templates.
        seed: the seed it was rendered from.
        dropped: objects removed because too little of them was visible.
    """

    image: np.ndarray
    instances: np.ndarray
    class_masks: dict[str, np.ndarray]
    objects: list[SceneObject]
    background: str
    caption: str
    seed: int
    dropped: int = 0

    def class_index_mask(self, classnames: Sequence[str] = CLASSNAMES) -> np.ndarray:
        """(H, W) uint8: 0 background, i + 1 where the pixel belongs to `classnames[i]`."""
        out = np.zeros(self.instances.shape, dtype=np.uint8)
        for obj in self.objects:
            out[self.instances == obj.instance] = classnames.index(obj.shape) + 1
        return out


# ----------------------------------------------------------------------------------------------------------------
# Seeds


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene `index` of a dataset or stream seeded with `seed` (a SeedSequence child)."""
    if seed < 0 or index < 0:
        raise DatasetError(f"seed={seed}, index={index}: seeds and scene indices must be >= 0")
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


# ----------------------------------------------------------------------------------------------------------------
# Geometry: each shape is a test on unit coordinates (u right, v down), inside the unit disk.


def _polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of many points against one polygon, (N, 2) vertices."""
    inside = np.zeros(u.shape, dtype=bool)
    previous = vertices[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        for vertex in vertices:
            (xi, yi), (xj, yj) = vertex, previous
            crosses = (yi > v) != (yj > v)
            inside ^= crosses & (u < (xj - xi) * (v - yi) / (yj - yi) + xi)
            previous = vertex
    return inside


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star_vertices() -> np.ndarray:
    angles = -np.pi / 2 + np.pi * np.arange(10) / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_A, _L = 0.3, 0.92
_CROSS = np.array([(_A, -_L), (_A, -_A), (_L, -_A), (_L, _A), (_A, _A), (_A, _L),
                   (-_A, _L), (-_A, _A), (-_L, _A), (-_L, -_A), (-_A, -_A), (-_A, -_L)])
_TRIANGLE = _regular(3, 1.0, -np.pi / 2)
_SQUARE = _regular(4, 0.98, np.pi / 4)
_STAR = _star_vertices()


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # (x^2 + y^2 - 1)^3 <= x^2 y^3, y up; its extent is the disk of radius 1.25 around (0, 0.25).
    x, y = 1.26 * u, 0.25 - 1.26 * v
    return (x * x + y * y - 1) ** 3 <= x * x * y**3


SHAPE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 0.9**2,
    "square": lambda u, v: _polygon(u, v, _SQUARE),
    "triangle": lambda u, v: _polygon(u, v, _TRIANGLE),
    "star": lambda u, v: _polygon(u, v, _STAR),
    "cross": lambda u, v: _polygon(u, v, _CROSS),
    "heart": _heart,
    "ring": lambda u, v: (u * u + v * v <= 0.95**2) & (u * u + v * v >= 0.52**2),
    "crescent": lambda u, v: (u * u + v * v <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.75**2),
}


@dataclass
class _Placed:
    """An object's full (unoccluded) footprint: a window of the image and its mask in it."""

    shape: str
    colour: str
    cx: float
    cy: float
    radius: float
    rotation: float
    window: tuple[slice, slice]
    mask: np.ndarray
    u: np.ndarray
    v: np.ndarray


def _place(shape: str, colour: str, cx: float, cy: float, radius: float, rotation: float, size: int) -> _Placed:
    """Rasterise one shape at pixel centres within its bounding window (only those pixels are tested)."""
    y0, y1 = max(0, int(np.floor(cy - radius)) - 1), min(size, int(np.ceil(cy + radius)) + 1)
    x0, x1 = max(0, int(np.floor(cx - radius)) - 1), min(size, int(np.ceil(cx + radius)) + 1)
    dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - cx)[None, :]
    c, s = np.cos(rotation), np.sin(rotation)
    u = (dx * c + dy * s) / radius
    v = (-dx * s + dy * c) / radius
    mask = SHAPE_TESTS[shape](u, v)
    return _Placed(shape, colour, cx, cy, radius, rotation, (slice(y0, y1), slice(x0, x1)), mask, u, v)


# ----------------------------------------------------------------------------------------------------------------
# Backgrounds and clutter (float32 images, painted over by the objects).


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (size, size); cached read-only, it is the same every scene."""
    y, x = np.meshgrid(np.arange(size, dtype=np.float32) + 0.5, np.arange(size, dtype=np.float32) + 0.5, indexing="ij")
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _two_tones(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, j = rng.choice(len(_BACKGROUND_TONES), size=2, replace=False)
    return _BACKGROUND_TONES[i], _BACKGROUND_TONES[j]


def _background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 background of the named kind."""
    a, b = _two_tones(rng)
    y, x = _grid(size)
    scale = size / 96.0
    period = rng.uniform(6.0, 14.0) * scale
    if name == "plain":
        select = None
    elif name == "striped":
        angle = rng.uniform(0, np.pi)
        select = np.floor((x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform()) % 2 == 1
    elif name == "checkered":
        oy, ox = rng.uniform(0, period, size=2)
        select = (np.floor((x + ox) / period) + np.floor((y + oy) / period)) % 2 == 1
    elif name == "dotted":
        oy, ox = rng.uniform(0, period, size=2)
        fy, fx = (y + oy) % period - period / 2, (x + ox) % period - period / 2
        select = fy * fy + fx * fx <= (0.22 * period) ** 2
    elif name == "grid":
        oy, ox = rng.uniform(0, period, size=2)
        width = max(1.0, scale)
        select = ((y + oy) % period < width) | ((x + ox) % period < width)
    elif name == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (x - size / 2) * np.cos(angle) + (y - size / 2) * np.sin(angle)
        t = ((t / (size * 0.71)) + 1) / 2
        return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)
    elif name == "noisy":
        grey = rng.normal(0.0, 22.0, size=(size, size, 1)).astype(np.float32)
        tint = rng.normal(0.0, 6.0, size=(size, size, 3)).astype(np.float32)
        return np.clip(a + grey + tint, 0, 255)
    else:
        raise DatasetError(f"unknown background {name!r}; choose from {list(BACKGROUNDS)}")
    image = np.empty((size, size, 3), dtype=np.float32)
    image[...] = a
    if select is not None:
        image[select] = b
    return image


def _draw_clutter(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Thin line segments and small dots: texture of the background, not objects of any class."""
    size = image.shape[0]
    scale = size / 96.0
    for _ in range(count):
        tone = _CLUTTER_TONES[rng.integers(len(_CLUTTER_TONES))]
        if rng.uniform() < 0.6:  # a line segment of width ~1 px, distance test at pixel centres
            length = rng.uniform(0.04, 0.1) * size
            angle = rng.uniform(0, np.pi)
            px, py = rng.uniform(0, size, size=2)
            qx, qy = px + length * np.cos(angle), py + length * np.sin(angle)
            half = 0.6 * scale
        else:  # a dot
            px, py = rng.uniform(0, size, size=2)
            qx, qy = px, py
            half = rng.uniform(0.8, 1.6) * scale
        y0, y1 = max(0, int(min(py, qy) - half) - 1), min(size, int(max(py, qy) + half) + 2)
        x0, x1 = max(0, int(min(px, qx) - half) - 1), min(size, int(max(px, qx) + half) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = (np.arange(y0, y1) + 0.5)[:, None]
        xx = (np.arange(x0, x1) + 0.5)[None, :]
        ex, ey = qx - px, qy - py
        t = np.clip(((xx - px) * ex + (yy - py) * ey) / max(ex * ex + ey * ey, 1e-9), 0, 1)
        near = (xx - px - t * ex) ** 2 + (yy - py - t * ey) ** 2 <= half * half
        image[y0:y1, x0:x1][near] = tone


# ----------------------------------------------------------------------------------------------------------------
# Captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _and_join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _caption(template: str, objects: list[SceneObject], background: str) -> str:
    """Objects are named left to right (by the centre of their visible box), so word order carries layout."""
    ordered = sorted(objects, key=lambda o: (o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]))
    phrases = [f"{_article(o.colour)} {o.colour} {o.shape}" for o in ordered]
    next_to = phrases[0] if len(phrases) == 1 else phrases[0] + " next to " + _and_join(phrases[1:])
    n = len(phrases)
    return template.format(objects=_and_join(phrases), next_to=next_to, background=background,
                           count=_NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n),
                           shapes="shape" if n == 1 else "shapes",
                           shape_list=_and_join([f"{_article(o.shape)} {o.shape}" for o in ordered]))


def zero_shot_prompts(templates: str | Sequence[str] = PROMPT_TEMPLATE,
                      classnames: Sequence[str] = CLASSNAMES) -> dict[str, list[str]]:
    """Prompts per class, in CLASSNAMES order: {"circle": ["a photo of a circle."], ...}."""
    templates = [templates] if isinstance(templates, str) else list(templates)
    return {name: [t.format(name) for t in templates] for name in classnames}


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def _compose(placed: list[_Placed], size: int) -> np.ndarray:
    """(size, size) int32 instance map: objects drawn in order, later over earlier."""
    instances = np.zeros((size, size), dtype=np.int32)
    for k, p in enumerate(placed, start=1):
        instances[p.window][p.mask] = k
    return instances


def render_scene(seed: int, config: SceneConfig | None = None) -> Scene:
    """Draw one scene; a pure function of (seed, config)."""
    cfg = config or SceneConfig()
    rng = np.random.default_rng(seed)
    size = cfg.image_size
    background = str(cfg.backgrounds[rng.integers(len(cfg.backgrounds))])
    image = _background(background, rng, size)
    _draw_clutter(image, rng, int(rng.integers(cfg.max_clutter + 1)))

    placed = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        shape = str(cfg.shapes[rng.integers(len(cfg.shapes))])
        colour = str(cfg.colours[rng.integers(len(cfg.colours))])
        radius = rng.uniform(cfg.min_size, cfg.max_size) * size / 2
        cx, cy = rng.uniform(radius, size - radius, size=2)
        limit = min(cfg.max_rotation, 30.0) if shape == "heart" else cfg.max_rotation
        rotation = np.deg2rad(rng.uniform(-limit, limit))
        placed.append(_place(shape, colour, float(cx), float(cy), float(radius), float(rotation), size))
    shading = [(rng.uniform(0, 2 * np.pi), rng.integers(2**31)) for _ in placed]

    instances = _compose(placed, size)
    visible = np.bincount(instances.ravel(), minlength=len(placed) + 1)[1:]
    keep = [k for k, p in enumerate(placed)
            if visible[k] >= cfg.min_visible_pixels and visible[k] >= cfg.min_visible_fraction * p.mask.sum()]
    dropped = len(placed) - len(keep)
    if dropped:  # removing an object only uncovers others, so one more composition settles it
        placed, shading = [placed[k] for k in keep], [shading[k] for k in keep]
        instances = _compose(placed, size)

    objects = []
    for k, (p, (light, noise_seed)) in enumerate(zip(placed, shading), start=1):
        own = instances[p.window] == k
        rows, cols = np.nonzero(own)
        y0, x0 = p.window[0].start, p.window[1].start
        fill = np.asarray(COLOURS[p.colour], dtype=np.float32)
        if cfg.texture > 0:  # mild shading of the object's own pixels: a light direction plus grain
            ramp = p.u[own] * np.cos(light) + p.v[own] * np.sin(light)
            grain = np.random.default_rng(noise_seed).normal(0, 1, size=len(rows))
            factor = 1 + cfg.texture * (0.8 * ramp + 0.25 * grain)
            image[rows + y0, cols + x0] = fill[None, :] * factor[:, None].astype(np.float32)
        else:
            image[rows + y0, cols + x0] = fill
        objects.append(SceneObject(
            instance=k, shape=p.shape, colour=p.colour, center=(round(p.cx, 3), round(p.cy, 3)),
            diameter=round(2 * p.radius, 3), rotation=round(float(np.rad2deg(p.rotation)), 3),
            area=int(p.mask.sum()), visible_area=len(rows),
            bbox=(int(cols.min() + x0), int(rows.min() + y0), int(cols.max() + x0 + 1), int(rows.max() + y0 + 1)),
        ))

    template = cfg.caption_templates[rng.integers(len(cfg.caption_templates))]
    class_masks: dict[str, np.ndarray] = {}
    for obj in objects:
        own = instances == obj.instance
        class_masks[obj.shape] = class_masks[obj.shape] | own if obj.shape in class_masks else own
    return Scene(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        instances=instances,
        class_masks=class_masks,
        objects=objects,
        background=background,
        caption=_caption(template, objects, background),
        seed=int(seed),
        dropped=dropped,
    )


class SceneStream:
    """Scenes `start, start + 1, ...` of the stream seeded with `seed` (endless when count is None)."""

    def __init__(self, seed: int = 0, config: SceneConfig | None = None, start: int = 0, count: int | None = None) -> None:
        self.seed, self.config, self.start, self.count = seed, config or SceneConfig(), start, count

    def __iter__(self) -> Iterator[Scene]:
        index = self.start
        while self.count is None or index < self.start + self.count:
            yield render_scene(scene_seed(self.seed, index), self.config)
            index += 1


def batch_of_scenes(seed: int, start: int, count: int, config: SceneConfig | None = None) -> tuple[np.ndarray, list[str]]:
    """Images (count, H, W, 3) uint8 and captions of scenes start..start+count-1: the training loader."""
    cfg = config or SceneConfig()
    images = np.empty((count, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    captions = []
    for i in range(count):
        scene = render_scene(scene_seed(seed, start + i), cfg)
        images[i] = scene.image
        captions.append(scene.caption)
    return images, captions


# ----------------------------------------------------------------------------------------------------------------
# Writing a dataset folder


_SUBFOLDERS = ("images", "masks", "instances")
_OURS = {*_SUBFOLDERS, "meta.json", "annotations.json"}
_FIX = "run `eclip synth {root} --n N` to write a dataset"


def _atomic_png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _atomic_json(data: dict, path: Path, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def _prepare_root(root: Path) -> None:
    """Refuse a non-empty folder that is not ours; invalidate an old dataset before overwriting it."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder; pass a new or empty folder")
    if root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OURS and temp_target(p.name) not in _OURS)
        if foreign:
            raise DatasetError(f"{root}: not empty and not an eclip synthetic dataset (has {foreign[:3]}); "
                               "pass a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").unlink(missing_ok=True)  # from here until the end, the folder reads as incomplete
    for sub in _SUBFOLDERS:
        (root / sub).mkdir(exist_ok=True)


def write_dataset(root: str | Path, n: int, seed: int = 0, config: SceneConfig | None = None,
                  progress: Callable[[int], None] | None = None) -> Path:
    """Render scenes 0..n-1 of `seed` into `root` (layout in the module docstring); returns `root`.

    Files are written under temporary names and renamed, annotations.json after all images and
    meta.json last, so an interrupted run never leaves a meta.json describing missing files.
    `progress(k)` is called after each scene (the CLI passes a progress bar's update).
    """
    cfg = config or SceneConfig()
    root = Path(root)
    if n < 1:
        raise DatasetError(f"n={n}: a dataset needs at least one scene; pass --n 1 or more")
    _prepare_root(root)
    width = max(6, len(str(n - 1)))
    records = []
    for i in range(n):
        seed_i = scene_seed(seed, i)
        scene = render_scene(seed_i, cfg)
        image_id = f"{i:0{width}d}"
        _atomic_png(scene.image, root / "images" / f"{image_id}.png")
        _atomic_png(scene.class_index_mask(), root / "masks" / f"{image_id}.png")
        _atomic_png(scene.instances.astype(np.uint8), root / "instances" / f"{image_id}.png")
        records.append({"id": image_id, "seed": seed_i, "caption": scene.caption, "background": scene.background,
                        "dropped": scene.dropped, "objects": [o.to_dict() for o in scene.objects]})
        if progress is not None:
            progress(1)
    ids = {f"{r['id']}.png" for r in records}
    for sub in _SUBFOLDERS:  # files left by an earlier, larger dataset in the same folder, or by a killed write
        for stale in (root / sub).glob("*.png"):
            if stale.name not in ids:
                stale.unlink()
        remove_stale_temps(root / sub)
    remove_stale_temps(root, ["meta.json", "annotations.json"])
    _atomic_json({"images": records}, root / "annotations.json", indent=None)  # compact: it grows with n
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "classnames": list(CLASSNAMES), "n": n, "seed": seed,
            "config": cfg.to_dict()}
    _atomic_json(meta, root / "meta.json")
    logger.info("wrote %d synthetic scenes to %s", n, root)
    return root


# ----------------------------------------------------------------------------------------------------------------
# Reading a dataset folder


class _BadFile(DatasetError):
    """One unreadable file of an otherwise valid dataset: iteration records and skips it."""

    def __init__(self, path: Path, reason: str, root: Path) -> None:
        super().__init__(f"{path}: {reason}; {_FIX.format(root=root)}")
        self.path, self.reason = path, reason


def _read_json(path: Path, root: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: missing, so {root} is not a complete synthetic dataset; {_FIX.format(root=root)}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable JSON ({err}); {_FIX.format(root=root)}") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object; {_FIX.format(root=root)}")
    return data


class SyntheticDataset:
    """A folder written by `write_dataset`, yielding `Sample`s with the masks of the present classes.

    Indexing (`ds[i]`) raises `DatasetError` for a bad file; iterating records each bad file in
    `skipped` as (path, reason), logs it and goes on, so counts can be reported at the end.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such folder; {_FIX.format(root=self.root)}")
        self.meta = _read_json(self.root / "meta.json", self.root)
        if self.meta.get("format") != FORMAT or not isinstance(self.meta.get("version"), int):
            raise DatasetError(f"{self.root / 'meta.json'}: not an {FORMAT} meta file; {_FIX.format(root=self.root)}")
        if self.meta["version"] > FORMAT_VERSION:
            raise DatasetError(f"{self.root / 'meta.json'}: format version {self.meta['version']} is newer than this "
                               f"eclip reads ({FORMAT_VERSION}); upgrade eclip")
        self.classnames: tuple[str, ...] = tuple(self.meta.get("classnames") or ())
        records = _read_json(self.root / "annotations.json", self.root).get("images")
        if not isinstance(records, list) or len(records) != self.meta.get("n"):
            raise DatasetError(f"{self.root / 'annotations.json'}: does not list the {self.meta.get('n')} images "
                               f"meta.json announces; {_FIX.format(root=self.root)}")
        self.records: list[dict] = records
        self.skipped: list[tuple[Path, str]] = []

    @property
    def config(self) -> SceneConfig:
        """The SceneConfig the scenes were drawn with."""
        return SceneConfig.from_dict(self.meta["config"])

    def __len__(self) -> int:
        return len(self.records)

    def _png(self, folder: str, index: int, mode: set[str]) -> tuple[Path, Image.Image]:
        path = self.root / folder / f"{self.records[index]['id']}.png"
        if not path.is_file():
            raise _BadFile(path, "missing file", self.root)
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode not in mode:
                    raise _BadFile(path, f"mode {im.mode}, expected {sorted(mode)}", self.root)
                return path, im.copy()
        except (OSError, SyntaxError, ValueError) as err:
            raise _BadFile(path, f"unreadable PNG ({err})", self.root) from err

    def _index_map(self, folder: str, index: int, limit: int, shape: tuple[int, int]) -> np.ndarray:
        path, im = self._png(folder, index, {"L", "P"})
        values = np.asarray(im, dtype=np.uint8)
        if values.shape != shape:
            raise _BadFile(path, f"size {values.shape[::-1]} differs from its image's {shape[::-1]}", self.root)
        if values.max(initial=0) > limit:
            raise _BadFile(path, f"index {int(values.max())} is not one of 0..{limit}", self.root)
        return values

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index %= len(self)
        record = self.records[index]
        from eclip.data.images import load_image

        path = self.root / "images" / f"{record['id']}.png"
        if not path.is_file():
            raise _BadFile(path, "missing file", self.root)
        try:
            image = load_image(path)
        except EclipError as err:  # keep load_image's reason, replace its fix by ours
            raise _BadFile(path, str(err).removeprefix(f"{path}: ").split("; ")[0], self.root) from err
        labels = self._index_map("masks", index, len(self.classnames), (image.height, image.width))
        masks = {self.classnames[c - 1]: labels == c for c in np.unique(labels) if c > 0}
        meta = {"caption": record.get("caption", ""), "background": record.get("background"),
                "objects": record.get("objects", []), "seed": record.get("seed")}
        return Sample(image_id=record["id"], image=image, masks=masks, ignore=None, meta=meta)

    def instances(self, index: int) -> np.ndarray:
        """(H, W) uint8 instance map of image `index`: 0 background, k = objects[k - 1]."""
        record = self.records[index]
        limit = len(record.get("objects", []))
        size = self.meta["config"]["image_size"]
        return self._index_map("instances", index, limit, (size, size))

    def __iter__(self) -> Iterator[Sample]:
        self.skipped = []
        for index in range(len(self)):
            try:
                yield self[index]
            except _BadFile as err:
                logger.warning("skipping %s: %s", err.path, err.reason)
                self.skipped.append((err.path, err.reason))
