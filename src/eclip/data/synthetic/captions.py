"""Captions and prompts: what a scene says about itself, and the zero-shot prompts of its classes.

A caption names the objects left to right by the centre of their visible box ("a red star next to
a blue circle"), so word order carries the layout; a scene's caption comes from one of the config's
templates (`vocab.CAPTION_TEMPLATES`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from eclip.data.synthetic.vocab import CLASSNAMES, COLOURS, PROMPT_TEMPLATE

if TYPE_CHECKING:  # pragma: no cover
    from eclip.data.synthetic.scene import SceneObject

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _and_join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def object_phrase(colour: str, shape: str) -> str:
    """The caption's words for one object: "a red star", "an orange ring"."""
    return f"{_article(colour)} {colour} {shape}"


_OBJECT_PHRASE = re.compile(r"\b(?:an?) (?:" + "|".join(COLOURS) + ") (?:" + "|".join(CLASSNAMES) + r")\b")


def object_phrases(text: str) -> list[str]:
    """The colour-shape phrases a caption names, each once, in the caption's order: the words a phrase's map should answer.

    "a red star next to a blue circle and a red star" -> ["a red star", "a blue circle"]; a text
    in other words (a real caption) names none.
    """
    return list(dict.fromkeys(_OBJECT_PHRASE.findall(text)))


def caption(template: str, objects: list[SceneObject], background: str) -> str:
    """Objects are named left to right (by the centre of their visible box), so word order carries layout."""
    ordered = sorted(objects, key=lambda o: (o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]))
    phrases = [object_phrase(o.colour, o.shape) for o in ordered]
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

