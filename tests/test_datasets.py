"""Evaluation datasets: tiny VOC, COCO, Pascal Context and synthetic folders drawn by hand on disk.

Each test knows the exact masks it wrote, so a loader that shifts a label, drops the ignore
border, merges the wrong instances or decodes a skipped-over image fails here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eclip.data.registry import DATASETS, EvalDataset, SkippedImage, open_dataset, read_classnames
from eclip.data.synthetic import CLASSNAMES, SceneConfig, write_dataset
from eclip.errors import DatasetError

# ----------------------------------------------------------------------------------------------------------------
# Registry and synthetic scenes


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth"), n=5, seed=3, config=SceneConfig(image_size=32))


def test_synthetic_yields_the_folder_masks(synth_root):
    ds = open_dataset("synthetic", synth_root)
    assert isinstance(ds, EvalDataset) and ds.name == "synthetic"
    assert ds.classnames == list(CLASSNAMES) and len(ds) == 5
    samples = list(ds)
    assert [s.image_id for s in samples] == ["000000", "000001", "000002", "000003", "000004"]
    for sample in samples:
        labels = np.asarray(Image.open(synth_root / "masks" / f"{sample.image_id}.png"))
        expected = {CLASSNAMES[c - 1]: labels == c for c in np.unique(labels) if c}
        assert sample.masks.keys() == expected.keys() and sample.masks
        for name, mask in expected.items():
            np.testing.assert_array_equal(sample.masks[name], mask)
        assert sample.ignore is None and sample.meta["dataset"] == "synthetic"
    assert ds.skipped == []


def test_synthetic_bad_file_is_a_counted_skip(tmp_path):
    root = write_dataset(tmp_path / "s", n=3, seed=0, config=SceneConfig(image_size=32))
    (root / "images" / "000001.png").write_bytes(b"not a png")
    (root / "masks" / "000002.png").unlink()
    ds = open_dataset("synthetic", root)
    assert [s.image_id for s in ds] == ["000000"]
    assert [i for i, _ in ds.skipped] == ["000001", "000002"]
    assert "000001.png" in ds.skipped[0][1] and "missing" in ds.skipped[1][1]
    with pytest.raises(SkippedImage, match="000002"):
        ds[2]
    assert [s.image_id for s in ds] == ["000000"] and len(ds.skipped) == 2  # a second pass does not double-count


def test_limit_and_resume_do_not_decode_skipped_over_images(synth_root, monkeypatch):
    ds = open_dataset("synthetic", synth_root, limit=4)
    assert len(ds) == 4 and ds.ids == ["000000", "000001", "000002", "000003"]
    opened: list[int] = []
    original = type(ds).load
    monkeypatch.setattr(type(ds), "load", lambda self, i: opened.append(i) or original(self, i))
    assert [s.image_id for s in ds.iter_from(2)] == ["000002", "000003"]
    assert opened == [2, 3]
    next(iter(ds))
    assert opened == [2, 3, 0]  # lazy: one image decoded per sample asked for
    assert list(ds.iter_from(4)) == [] and len(open_dataset("synthetic", synth_root, limit=0)) == 0
    with pytest.raises(DatasetError, match="start=-1"):
        list(ds.iter_from(-1))


def test_registry_names_and_errors(tmp_path, synth_root):
    assert DATASETS == ("voc", "coco", "context", "synthetic")
    assert open_dataset("Synth", synth_root).name == "synthetic"
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; choose one of voc, coco, context, synthetic"):
        open_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        open_dataset("synthetic", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="limit=-2"):
        open_dataset("synthetic", synth_root, limit=-2)
    with pytest.raises(DatasetError, match="no splits"):
        open_dataset("synthetic", synth_root, split="train")



def test_classname_files_are_readable_and_complete():
    voc, coco, context = read_classnames("voc"), read_classnames("coco"), read_classnames("context")
    assert len(voc) == 20 and voc[10] == "dining table" and voc[15] == "potted plant" and voc[-1] == "tv monitor"
    assert len(coco) == 80 and coco[:3] == ["person", "bicycle", "car"] and coco[-1] == "toothbrush"
    assert len(context) == 59 and context[0] == "aeroplane" and context[49] == "table" and context[-1] == "wood"
    for names in (voc, coco, context):
        assert len(set(names)) == len(names) and all(n == n.strip() and n for n in names)
