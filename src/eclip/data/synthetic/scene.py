"""Rendering one scene: a pure function of (seed, config), with exact masks.

Why drawn by hand: every metric eclip reports (mIoU, score contrast, pointing game) is only as good
as its ground truth. The geometry of each object is rasterised with numpy at pixel centres (no
antialiasing) into an instance map, and the image is then painted *through* that map, so an
object's mask is by construction exactly the set of pixels painted with its fill.

A scene: a named background (its name appears in the caption), optional clutter (thin lines and
dots that belong to no class and to no mask: they are background), then 1..N shapes drawn in
order, later ones over earlier ones. Masks hold the *visible* pixels. An object left with fewer
than `min_visible_pixels` visible pixels, or less than `min_visible_fraction` of its own area, is
**dropped**: it is not drawn at all (the scene is composed again without it, which only uncovers
the others), is not in the caption, and is counted in `Scene.dropped`. So every object a caption
names can be seen, and no mask holds a sliver nobody could recognise.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from eclip.data.synthetic.backgrounds import draw_clutter, paint_background
from eclip.data.synthetic.captions import caption
from eclip.data.synthetic.config import SceneConfig
from eclip.data.synthetic.seeds import scene_seed
from eclip.data.synthetic.shapes import Placed, place
from eclip.data.synthetic.vocab import CLASSNAMES, COLOURS


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



def _compose(placed: list[Placed], size: int) -> np.ndarray:
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
    image = paint_background(background, rng, size)
    draw_clutter(image, rng, int(rng.integers(cfg.max_clutter + 1)))

    placed = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        shape = str(cfg.shapes[rng.integers(len(cfg.shapes))])
        colour = str(cfg.colours[rng.integers(len(cfg.colours))])
        radius = rng.uniform(cfg.min_size, cfg.max_size) * size / 2
        cx, cy = rng.uniform(radius, size - radius, size=2)
        limit = min(cfg.max_rotation, 30.0) if shape == "heart" else cfg.max_rotation
        rotation = np.deg2rad(rng.uniform(-limit, limit))
        placed.append(place(shape, colour, float(cx), float(cy), float(radius), float(rotation), size))
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
        caption=caption(template, objects, background),
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

