"""The words of the synthetic scenes: shape classes, colours, backgrounds, caption templates and the zero-shot prompt.

A caption names every visible object by its colour and shape and the background by its pattern
("a red star next to a blue circle on a striped background"), so these lists are both what is
drawn and what is said.
"""
from __future__ import annotations

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
#: embedding read from the foreground alone can match them (the ECLIP ablation's "objects" captions).
OBJECT_CAPTION_TEMPLATES: tuple[str, ...] = tuple(t for t in CAPTION_TEMPLATES if "{background}" not in t)

#: The object templates plus one that names the shapes alone, in the words of the zero-shot prompt
#: ("a photo of a star." for a scene of one star): a test of whether the ITSM's inversion lives in
#: the part of text space that the training captions never reach (README, "Where the shift lives").
SHAPE_CAPTION_TEMPLATES: tuple[str, ...] = OBJECT_CAPTION_TEMPLATES + ("a photo of {shape_list}.",)

#: The caption sets a training run or a dataset chooses from, by name.
CAPTION_SETS: dict[str, tuple[str, ...]] = {"all": CAPTION_TEMPLATES, "objects": OBJECT_CAPTION_TEMPLATES,
                                            "shapes": SHAPE_CAPTION_TEMPLATES}

#: The zero-shot prompt template for the shape classes.
PROMPT_TEMPLATE = "a photo of a {}."
