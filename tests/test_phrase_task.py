"""`eclip evaluate --task phrases`: each object's colour-and-shape phrase against its own instance mask."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_evaluate, tiny_model

from eclip.data.phrases import SyntheticPhrases, open_phrases, phrase
from eclip.data.synthetic import SceneConfig, SyntheticDataset, write_dataset
from eclip.errors import DatasetError
from eclip.evaluation import EvalConfig, EvaluationError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    config = SceneConfig(image_size=48, min_objects=2, max_objects=3, max_clutter=0, shapes=("star", "circle"), colours=("red", "blue"))
    return write_dataset(tmp_path_factory.mktemp("phr"), n=8, seed=11, config=config)


def test_phrases_are_instance_masks_named_by_colour_and_shape(scenes):
    ds = SyntheticPhrases(scenes)
    assert ds.classnames == ["a red star", "a blue star", "a red circle", "a blue circle"]
    raw = SyntheticDataset(scenes)
    seen_two_colours_of_one_shape = False
    for i in range(len(ds)):
        sample, instances = ds[i], raw.instances(i)
        objects = raw.records[i]["objects"]
        for name, mask in sample.masks.items():
            ks = [k for k, o in enumerate(objects, 1) if phrase(o["colour"], o["shape"]) == name]
            assert np.array_equal(mask, np.isin(instances, ks))
        shapes = [o["shape"] for o in objects]
        colours = {o["shape"]: set() for o in objects}
        for o in objects:
            colours[o["shape"]].add(o["colour"])
        seen_two_colours_of_one_shape |= any(len(c) > 1 for c in colours.values()) and len(shapes) > 1
        class_masks = raw[i].masks
        for shape, mask in class_masks.items():  # a class mask is the union of its phrases' masks
            union = np.zeros_like(mask)
            for name, m in sample.masks.items():
                if name.endswith(shape):
                    union |= m
            assert np.array_equal(union, mask)
    assert seen_two_colours_of_one_shape, "the fixture has a red and a blue object of the same shape in one image"


def test_only_synthetic_has_phrases(scenes):
    with pytest.raises(DatasetError, match="task=phrases"):
        open_phrases("voc", scenes)
    with pytest.raises(EvaluationError, match="task=.objects. must be one of classes, phrases"):
        EvalConfig("synthetic", scenes, task="objects")
    assert EvalConfig("synthetic", scenes, task="phrases").template_set == "{}"


def test_evaluate_phrases_reports_every_method(scenes, tmp_path):
    model = tiny_model(tmp_path, "vit")
    out = tmp_path / "phrases.json"
    run_evaluate("--dataset", "synthetic", "--root", str(scenes), "--task", "phrases", "--model", str(model), "--method", "itsm",
        "--method", "decomposition", "--method", "cliptrase", "--no-perturbation", "-o", str(out))
    records = json.loads(out.read_text())
    assert [r["method"] for r in records] == ["itsm", "decomposition", "cliptrase"]
    n_pairs = sum(len(SyntheticPhrases(scenes)[i].masks) for i in range(8))
    for r in records:
        assert r["task"] == "phrases" and r["dataset"] == "synthetic/phrases" and r["templates"] == "{}"
        assert r["n_pairs"] + r["degenerate_pairs"] == n_pairs
        for key in ("pointing_game", "fg_iou", "msc"):
            assert r[key] is not None
