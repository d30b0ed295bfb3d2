"""Seeded procedural scenes with exact masks: the offline benchmark and the bundled models' training data.

One module per job: `vocab` (the classes, colours, backgrounds and caption templates), `config`
(`SceneConfig`), `seeds` (which scenes are which), `shapes` and `backgrounds` (what is drawn),
`captions`, `scene` (rendering one scene; why drawn by hand), `folder` (the dataset folder's
layout and `write_dataset`) and `dataset` (reading it back: `SyntheticDataset`, `SyntheticEval`).
Everything public is importable from here, as `from eclip.data.synthetic import SceneConfig`.
"""
from __future__ import annotations

from eclip.data.synthetic.captions import object_phrase, object_phrases, zero_shot_prompts
from eclip.data.synthetic.config import SceneConfig
from eclip.data.synthetic.dataset import SyntheticDataset, SyntheticEval
from eclip.data.synthetic.folder import FORMAT, FORMAT_VERSION, write_dataset
from eclip.data.synthetic.scene import Scene, SceneObject, SceneStream, batch_of_scenes, render_scene
from eclip.data.synthetic.seeds import TEST_SEED, TRAIN_SEEDS, VALIDATION_SEED, scene_seed
from eclip.data.synthetic.shapes import SHAPE_TESTS
from eclip.data.synthetic.vocab import (
    BACKGROUNDS,
    CAPTION_SETS,
    CAPTION_TEMPLATES,
    CLASSNAMES,
    COLOURS,
    OBJECT_CAPTION_TEMPLATES,
    PROMPT_TEMPLATE,
    SHAPE_CAPTION_TEMPLATES,
)

__all__ = [
    "BACKGROUNDS", "CAPTION_SETS", "CAPTION_TEMPLATES", "CLASSNAMES", "COLOURS", "FORMAT", "FORMAT_VERSION",
    "OBJECT_CAPTION_TEMPLATES", "PROMPT_TEMPLATE", "SHAPE_CAPTION_TEMPLATES", "SHAPE_TESTS", "TEST_SEED", "TRAIN_SEEDS",
    "VALIDATION_SEED", "Scene", "SceneConfig", "SceneObject", "SceneStream", "SyntheticDataset", "SyntheticEval",
    "batch_of_scenes", "object_phrase", "object_phrases", "render_scene", "scene_seed", "write_dataset", "zero_shot_prompts",
]
