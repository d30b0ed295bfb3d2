"""How scenes are drawn: one frozen, validated configuration, stored in a dataset's meta.json."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from eclip.data.synthetic.vocab import BACKGROUNDS, CAPTION_TEMPLATES, CLASSNAMES, COLOURS
from eclip.errors import DatasetError


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
    def from_dict(cls, data: object) -> SceneConfig:
        """Inverse of `to_dict`, for a dict read from a file: unknown keys and values of the wrong type are errors.

        Each value must have its field's kind (a whole number, a finite number, a list of strings),
        so a hand-edited meta.json fails here with the field named, not in a comparison later.
        """
        if not isinstance(data, dict):
            raise DatasetError(f"the scene config is a {type(data).__name__}, not an object of SceneConfig fields")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise DatasetError(f"unknown SceneConfig keys {unknown}; known keys are {sorted(fields)}")
        for name, value in data.items():
            kind = _kind_error(fields[name].default, value)
            if kind:
                raise DatasetError(f"SceneConfig field {name}={value!r} is not {kind}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _kind_error(default: object, value: object) -> str | None:
    """What `value` should be to stand where `default` stands ("a whole number", ...), or None if it is."""
    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of names"
    if isinstance(value, bool):
        return "a number"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and math.isfinite(value) else "a finite number"
    return None if isinstance(value, int) else "a whole number"
