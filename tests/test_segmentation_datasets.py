"""The segmentation benchmark's datasets in their standard layouts, on tiny fake folders, and their label maps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eclip.data.coco_stuff import USED, COCOObjectDataset, COCOObjectInstances
from eclip.data.registry import open_dataset, read_classnames
from eclip.errors import DatasetError
from eclip.segmentation import WITH_BACKGROUND, benchmark_key, label_map

RNG = np.random.default_rng(3)


def _image(path: Path, height: int = 6, width: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _labels(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def _segmentation_labels(dataset, index: int = 0) -> np.ndarray:
    sample = dataset[index]
    return label_map(sample, dataset.classnames, benchmark_key(dataset.name) in WITH_BACKGROUND)


# ------------------------------------------------------------------------------------------ VOC21 / Context60
def _voc_folder(base: Path, label_dir: str, split_dir: str, labels: np.ndarray) -> None:
    _image(base / "JPEGImages" / "a.jpg", *labels.shape)
    _labels(base / label_dir / "a.png", labels)
    (base / split_dir).mkdir(parents=True)
    (base / split_dir / "val.txt").write_text("a\n")


def test_voc21_counts_the_background_and_voc20_ignores_it(tmp_path):
    labels = np.zeros((6, 8), np.uint8)
    labels[:2, :3] = 1
    labels[2, :4] = 255
    labels[4:, 5:] = 15
    _voc_folder(tmp_path / "VOCdevkit" / "VOC2012", "SegmentationClass", "ImageSets/Segmentation", labels)
    voc21, voc20 = open_dataset("voc21", tmp_path), open_dataset("voc20", tmp_path)
    assert voc21.name == "voc21" and voc20.name == "voc" and voc21.classnames == read_classnames("voc")
    assert (_segmentation_labels(voc21) == labels).all()  # background 0, classes 1..20, border 255: VOC's own numbers
    expected20 = np.where(labels == 0, 255, np.where(labels == 255, 255, labels - 1))
    assert (_segmentation_labels(voc20) == expected20).all()


def test_context60_keeps_label_zero_as_background(tmp_path):
    labels = np.zeros((6, 8), np.uint8)
    labels[:3] = 50  # table
    labels[5, 7] = 255
    _voc_folder(tmp_path / "VOCdevkit" / "VOC2010", "SegmentationClassContext", "ImageSets/SegmentationContext", labels)
    c60, c59 = open_dataset("context60", tmp_path), open_dataset("context59", tmp_path)
    assert c60[0].ignore.sum() == 1 and c59[0].ignore.sum() == 6 * 8 - 24
    assert (_segmentation_labels(c60) == labels).all()
    assert (_segmentation_labels(c59) == np.where(labels == 50, 49, 255)).all()


# ------------------------------------------------------------------------------------------ ADE20K
def test_ade20k_ignores_other_and_skips_unknown_values(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    good = np.zeros((6, 8), np.uint8)
    good[:3] = 1  # wall
    good[3:, :4] = 150  # flag
    bad = good.copy()
    bad[0, 0] = 151
    for name, labels in (("ADE_val_00000001", good), ("ADE_val_00000002", bad)):
        _image(root / "images" / "validation" / f"{name}.jpg")
        _labels(root / "annotations" / "validation" / f"{name}.png", labels)
    ds = open_dataset("ade20k", tmp_path)
    assert len(ds) == 2 and len(ds.classnames) == 150 and ds.classnames[0] == "wall" and ds.classnames[-1] == "flag"
    sample = ds[0]
    assert set(sample.masks) == {"wall", "flag"} and int(sample.ignore.sum()) == 12
    assert (_segmentation_labels(ds) == np.where(good == 0, 255, good - 1)).all()
    assert [s.image_id for s in ds] == ["ADE_val_00000001"] and "151" in ds.skipped[0][1]
    with pytest.raises(DatasetError, match="ADEChallengeData2016"):
        open_dataset("ade20k", tmp_path / "ADEChallengeData2016" / "images")


# ------------------------------------------------------------------------------------------ Cityscapes
@pytest.mark.parametrize("suffix, road, car, other", [("_gtFine_labelTrainIds.png", 0, 13, 255), ("_gtFine_labelIds.png", 7, 26, 4)])
def test_cityscapes_reads_train_ids_or_maps_label_ids(tmp_path, suffix, road, car, other):
    labels = np.full((6, 8), other, np.uint8)
    labels[3:] = road
    labels[:2, :2] = car
    stem = "frankfurt_000000_000294"
    _image(tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png")
    _labels(tmp_path / "gtFine" / "val" / "frankfurt" / f"{stem}{suffix}", labels)
    ds = open_dataset("cityscapes", tmp_path)
    assert ds.ids == [stem] and len(ds.classnames) == 19
    expected = np.full((6, 8), 255, np.uint8)
    expected[3:] = 0
    expected[:2, :2] = 13
    assert (_segmentation_labels(ds) == expected).all()


# ------------------------------------------------------------------------------------------ COCO-Stuff and COCO-Object
def _stuff_maps(root: Path) -> np.ndarray:
    labels = np.full((6, 8), 255, np.uint8)
    labels[:2] = 0  # person (category 1)
    labels[2:4] = 89  # toothbrush (category 90), the last thing
    labels[4:, :4] = 181  # wood (category 182), the last stuff class
    _image(root / "val2017" / "000000000139.jpg")
    _labels(root / "stuffthingmaps_trainval2017" / "val2017" / "000000000139.png", labels)
    return labels


def test_coco_stuff_maps_the_171_used_ids(tmp_path):
    _stuff_maps(tmp_path / "coco")
    ds = open_dataset("coco_stuff", tmp_path)
    assert len(ds.classnames) == 171 == len(USED) and ds.classnames[79] == "toothbrush" and ds.classnames[-1] == "wood"
    out = _segmentation_labels(ds)
    assert (out[:2] == 0).all() and (out[2:4] == 79).all() and (out[4:, :4] == 170).all() and (out[4:, 4:] == 255).all()


def test_coco_object_from_label_maps_makes_everything_else_background(tmp_path):
    _stuff_maps(tmp_path)
    ds = open_dataset("coco_object", tmp_path)
    assert isinstance(ds, COCOObjectDataset) and ds.classnames == read_classnames("coco")
    out = _segmentation_labels(ds)
    assert (out[:2] == 1).all() and (out[2:4] == 80).all() and (out[4:] == 0).all()  # stuff and unlabelled: background


def test_coco_object_converted_and_from_instances(tmp_path):
    converted = tmp_path / "converted"
    labels = np.zeros((6, 8), np.uint8)
    labels[:3, :3] = 80
    _image(converted / "images" / "val2017" / "000000000139.jpg")
    _labels(converted / "annotations" / "val2017" / "000000000139_instanceTrainIds.png", labels)
    assert (_segmentation_labels(open_dataset("coco_object", converted)) == labels).all()

    pytest.importorskip("pycocotools")
    instances = tmp_path / "instances"
    _image(instances / "val2017" / "000000000001.jpg")
    ann = {"id": 1, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": [[0, 0, 4, 0, 4, 3, 0, 3]]}
    (instances / "annotations").mkdir(parents=True)
    (instances / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 6, "width": 8}], "annotations": [ann],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]}))
    ds = open_dataset("coco_object", instances)
    assert isinstance(ds, COCOObjectInstances)
    out = _segmentation_labels(ds)
    assert set(np.unique(out)) == {0, 2} and (out[4:] == 0).all()
    with pytest.raises(DatasetError, match="stuffthingmaps"):
        open_dataset("coco_object", tmp_path / "nowhere")
