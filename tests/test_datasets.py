"""Evaluation datasets: tiny VOC, COCO, Pascal Context and synthetic folders drawn by hand on disk.

Each test knows the exact masks it wrote, so a loader that shifts a label, drops the ignore
border, merges the wrong instances or decodes a skipped-over image fails here.
"""
from __future__ import annotations

import json
import shutil
import sys
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
    assert DATASETS[:4] == ("voc", "coco", "context", "synthetic")
    assert open_dataset("Synth", synth_root).name == "synthetic"
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'; choose one of voc, coco, context, synthetic, voc21"):
        open_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        open_dataset("synthetic", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="limit=-2"):
        open_dataset("synthetic", synth_root, limit=-2)
    with pytest.raises(DatasetError, match="no splits"):
        open_dataset("synthetic", synth_root, split="train")
    for typo, meant in (("synthetc", "synthetic"), ("vco", "voc"), ("pascal_contxt", "context"), ("coco2071", "coco")):
        with pytest.raises(DatasetError, match=f"unknown dataset '{typo}'; did you mean {meant}\\? choose one of voc,"):
            open_dataset(typo, tmp_path)
    for name in DATASETS:  # every entry of the table names a class that opens (here: refuses a missing folder)
        with pytest.raises(DatasetError, match="nowhere|pycocotools"):
            open_dataset(name, tmp_path / "nowhere")


def test_classname_files_are_readable_and_complete():
    voc, coco, context = read_classnames("voc"), read_classnames("coco"), read_classnames("context")
    assert len(voc) == 20 and voc[10] == "dining table" and voc[15] == "potted plant" and voc[-1] == "tv monitor"
    assert len(coco) == 80 and coco[:3] == ["person", "bicycle", "car"] and coco[-1] == "toothbrush"
    assert len(context) == 59 and context[0] == "aeroplane" and context[49] == "table" and context[-1] == "wood"
    for names in (voc, coco, context):
        assert len(set(names)) == len(names) and all(n == n.strip() and n for n in names)


# ----------------------------------------------------------------------------------------------------------------
# Helpers: hand-drawn label maps and VOC-style folders

RNG = np.random.default_rng(0)
PALETTE = RNG.integers(0, 256, 768, dtype=np.uint8).tobytes()  # colours unrelated to indices: reading colours would fail


def _jpeg(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=95)


def _label_png(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = labels.astype(np.uint8)
    im = Image.frombytes("L" if mode == "L" else "P", labels.shape[::-1], labels.tobytes())
    if mode == "P":
        im.putpalette(PALETTE)
    (im.convert("RGB") if mode == "RGB" else im).save(path)


def _voc_labels(height: int = 6, width: int = 8) -> np.ndarray:
    """Aeroplane (1) top-left, person (15) bottom-right, a 255 border around the aeroplane, 0 elsewhere."""
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[0:3, 0:4] = 255
    labels[0:2, 0:3] = 1
    labels[4:6, 5:8] = 15
    return labels


def _voc_style(base: Path, images: dict[str, tuple[np.ndarray | None, str]], label_dir: str, split_dir: str) -> Path:
    """Write JPEGImages/, label PNGs (None: no PNG; mode as given) and the val split listing every image."""
    for image_id, (labels, mode) in images.items():
        h, w = (6, 8) if labels is None else labels.shape
        _jpeg(base / "JPEGImages" / f"{image_id}.jpg", w, h)
        if labels is not None:
            _label_png(base / label_dir / f"{image_id}.png", labels, mode)
    (base / label_dir).mkdir(parents=True, exist_ok=True)
    (base / split_dir).mkdir(parents=True, exist_ok=True)
    (base / split_dir / "val.txt").write_text("".join(f"{i}\n" for i in images))
    return base


@pytest.fixture()
def voc_root(tmp_path) -> Path:
    """VOCdevkit/VOC2012 with two good images and four broken ones, in split order."""
    grey = np.zeros((5, 4), dtype=np.uint8)
    grey[1:4, 1:3] = 20  # tv monitor, as an SBD-style grayscale PNG, no ignore pixels
    unknown = _voc_labels()
    unknown[5, 0] = 21
    base = _voc_style(tmp_path / "VOCdevkit" / "VOC2012", {
        "2007_000001": (_voc_labels(), "P"),
        "2007_000002": (None, "P"),          # label PNG missing
        "2007_000003": (_voc_labels(), "P"),  # image file corrupt (below)
        "2007_000004": (unknown, "P"),        # label 21 is no VOC class
        "2007_000005": (grey, "L"),
        "2007_000006": (_voc_labels(), "RGB"),  # colour-converted mask
    }, "SegmentationClass", "ImageSets/Segmentation")
    jpeg = base / "JPEGImages" / "2007_000003.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # a half-downloaded file
    return tmp_path


# ----------------------------------------------------------------------------------------------------------------
# VOC


def test_voc_masks_ignore_and_counted_skips(voc_root):
    ds = open_dataset("voc", voc_root)
    assert ds.name == "voc" and ds.root == voc_root / "VOCdevkit" / "VOC2012"
    assert ds.classnames == read_classnames("voc") and len(ds) == 6
    first, second = list(ds)
    labels = _voc_labels()
    assert first.image_id == "2007_000001" and first.size == (6, 8) and first.image.mode == "RGB"
    assert first.masks.keys() == {"aeroplane", "person"}
    np.testing.assert_array_equal(first.masks["aeroplane"], labels == 1)
    np.testing.assert_array_equal(first.masks["person"], labels == 15)
    np.testing.assert_array_equal(first.ignore, labels == 255)
    assert first.ignore.sum() == 12 - 6 and not (first.ignore & first.masks["aeroplane"]).any()
    assert second.image_id == "2007_000005" and second.masks.keys() == {"tv monitor"} and second.ignore is None
    assert second.masks["tv monitor"].sum() == 6
    reasons = dict(ds.skipped)
    assert list(reasons) == ["2007_000002", "2007_000003", "2007_000004", "2007_000006"]
    assert "label PNG missing" in reasons["2007_000002"]
    assert "2007_000003.jpg" in reasons["2007_000003"] and "corrupt" in reasons["2007_000003"]
    assert "label values [21]" in reasons["2007_000004"]
    assert "mode RGB" in reasons["2007_000006"]


def test_voc_root_conveniences_limit_and_resume(voc_root):
    for root in (voc_root, voc_root / "VOCdevkit", voc_root / "VOCdevkit" / "VOC2012"):
        assert open_dataset("voc", root).root == voc_root / "VOCdevkit" / "VOC2012"
    ds = open_dataset("voc", voc_root, limit=2)
    assert ds.ids == ["2007_000001", "2007_000002"]
    assert [s.image_id for s in ds] == ["2007_000001"] and [i for i, _ in ds.skipped] == ["2007_000002"]
    resumed = open_dataset("voc", voc_root)
    assert [s.image_id for s in resumed.iter_from(3)] == ["2007_000005"]
    assert [i for i, _ in resumed.skipped] == ["2007_000004", "2007_000006"]


def test_voc_broken_folders_say_what_is_expected(voc_root, tmp_path):
    with pytest.raises(DatasetError, match=r"no SegmentationClass found .*expected voc layout ROOT/JPEGImages/<id>\.jpg"):
        open_dataset("voc", tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages")
    with pytest.raises(DatasetError, match=r"train\.txt: split file missing"):
        open_dataset("voc", voc_root, split="train")
    with pytest.raises(DatasetError, match="no such folder"):
        open_dataset("voc", tmp_path / "missing")
    (voc_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(DatasetError, match="lists no image"):
        open_dataset("voc", voc_root)

    shutil.rmtree(voc_root / "VOCdevkit" / "VOC2012" / "JPEGImages")
    with pytest.raises(DatasetError, match=r"JPEGImages: folder missing"):
        open_dataset("voc", voc_root)


def test_voc_label_size_mismatch_is_a_skip(tmp_path):
    _voc_style(tmp_path, {"a": (_voc_labels(6, 8), "P")}, "SegmentationClass", "ImageSets/Segmentation")
    _label_png(tmp_path / "SegmentationClass" / "a.png", _voc_labels(6, 9))
    ds = open_dataset("voc", tmp_path)
    assert list(ds) == [] and "9x6 but its image is 8x6" in ds.skipped[0][1]
    with pytest.raises(SkippedImage, match="image a: "):
        ds[0]


# ----------------------------------------------------------------------------------------------------------------
# Pascal Context


def _context_labels() -> np.ndarray:
    labels = np.zeros((6, 8), dtype=np.uint8)  # 0: one of the other 400 classes -> ignored
    labels[:, 0:3] = 1   # aeroplane
    labels[0:3, 3:8] = 50  # table
    labels[3:6, 4:8] = 59  # wood
    return labels


def test_context_masks_zero_is_ignored_and_unknown_label_skipped(tmp_path):
    bad = _context_labels()
    bad[0, 0] = 60
    base = tmp_path / "VOCdevkit" / "VOC2010"
    _voc_style(base, {"2008_000001": (_context_labels(), "L"), "2008_000002": (bad, "L")},
               "SegmentationClassContext", "ImageSets/SegmentationContext")
    _voc_style(tmp_path / "VOCdevkit" / "VOC2012", {"x": (_voc_labels(), "P")}, "SegmentationClass", "ImageSets/Segmentation")
    ds = open_dataset("context", tmp_path / "VOCdevkit")
    assert ds.root == base and ds.classnames == read_classnames("context") and len(ds.classnames) == 59
    (sample,) = list(ds)
    labels = _context_labels()
    assert sample.masks.keys() == {"aeroplane", "table", "wood"}
    for name, value in (("aeroplane", 1), ("table", 50), ("wood", 59)):
        np.testing.assert_array_equal(sample.masks[name], labels == value)
    np.testing.assert_array_equal(sample.ignore, labels == 0)
    assert sample.ignore.sum() == 3
    assert ds.skipped == [("2008_000002", f"{base / 'SegmentationClassContext' / '2008_000002.png'}: label values [60] are none of "
                                          "classes 1..59, background [], ignore [0, 255]")]
    assert open_dataset("voc", tmp_path / "VOCdevkit").ids == ["x"]  # each loader descends into its own year


def test_context_detail_json_only_asks_for_conversion(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "trainval_merged.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"trainval_merged\.json: the Detail-API annotation is not read directly.*"
                                           r"dataset_converters/pascal_context\.py"):
        open_dataset("pascal_context", tmp_path)
    with pytest.raises(DatasetError, match="expected context layout"):
        open_dataset("context", tmp_path / "VOCdevkit" / "VOC2010" / "JPEGImages")


# ----------------------------------------------------------------------------------------------------------------
# COCO


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"counts": ([0] if flat[0] else []) + runs, "size": list(mask.shape)}


def _box(x0: int, y0: int, x1: int, y1: int, shape: tuple[int, int] = (8, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture()
def coco_root(tmp_path) -> Path:
    """Image 1: two people (a polygon, a compressed RLE), a bicycle polygon and a crowd of people
    overlapping the second person; image 2 only a crowd and image 6 nothing (both excluded);
    image 3 missing, image 4 an unknown category, image 5 a size that differs from its file."""
    mask_api = pytest.importorskip("pycocotools.mask")
    root = tmp_path / "coco"
    rle = mask_api.encode(np.asfortranarray(_box(6, 4, 9, 7).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rle},
        {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": [[0, 5, 3, 5, 3, 8, 0, 8]]},
        {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": _uncompressed_rle(_box(5, 3, 10, 8))},
        {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 1, "segmentation": _uncompressed_rle(_box(0, 0, 2, 2))},
        {"id": 30, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
        {"id": 40, "image_id": 4, "category_id": 7, "iscrowd": 0, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
        {"id": 50, "image_id": 5, "category_id": 3, "iscrowd": 0, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
    ]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 8, "width": 12 if i == 5 else 10} for i in (6, 5, 4, 3, 2, 1)]
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                  {"id": 2, "name": "bicycle"}]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": categories}))
    for i in (1, 2, 4, 5, 6):
        _jpeg(root / "val2017" / f"{i:012d}.jpg", 10, 8)
    return root


def test_coco_union_of_instances_crowd_ignored_and_skips(coco_root):
    ds = open_dataset("coco", coco_root)
    assert ds.name == "coco" and ds.classnames == ["person", "bicycle", "car", "toothbrush"]  # category-id order
    assert ds.ids == ["000000000001", "000000000003", "000000000004", "000000000005"] and ds.excluded == 2
    (sample,) = list(ds)
    assert sample.image_id == "000000000001" and sample.size == (8, 10) and sample.meta["coco_id"] == 1
    assert sample.masks.keys() == {"person", "bicycle"}
    np.testing.assert_array_equal(sample.masks["person"], _box(1, 1, 4, 3) | _box(6, 4, 9, 7))
    np.testing.assert_array_equal(sample.masks["bicycle"], _box(0, 5, 3, 8))
    np.testing.assert_array_equal(sample.ignore, _box(5, 3, 10, 8) & ~_box(6, 4, 9, 7))  # crowd minus instances
    reasons = dict(ds.skipped)
    assert list(reasons) == ["000000000003", "000000000004", "000000000005"]
    assert "000000000003.jpg: no such file" in reasons["000000000003"]
    assert "annotation 40: category_id 7 is not in the file's categories" in reasons["000000000004"]
    assert "image is 10x8 but its annotations are 12x8" in reasons["000000000005"]


def test_coco_limit_resume_and_parent_root(coco_root):
    ds = open_dataset("coco", coco_root.parent, limit=1)
    assert ds.root == coco_root and ds.ids == ["000000000001"] and len(ds) == 1
    assert [s.image_id for s in ds] == ["000000000001"] and ds.skipped == []
    resumed = open_dataset("coco", coco_root)
    assert list(resumed.iter_from(1)) == [] and [i for i, _ in resumed.skipped] == ["000000000003", "000000000004", "000000000005"]


def test_coco_broken_folders(coco_root, tmp_path):
    with pytest.raises(DatasetError, match=r"no annotations/instances_train2017\.json found"):
        open_dataset("coco", coco_root, split="train2017")
    (coco_root / "val2017").rename(coco_root / "elsewhere")
    with pytest.raises(DatasetError, match=r"val2017: image folder missing"):
        open_dataset("coco", coco_root)
    (coco_root / "images").mkdir()
    (coco_root / "elsewhere").rename(coco_root / "images" / "val2017")
    assert len(open_dataset("coco", coco_root)) == 4  # ROOT/images/val2017 is accepted
    (coco_root / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable COCO instances file"):
        open_dataset("coco", coco_root)


def test_coco_without_pycocotools_says_how_to_install(coco_root, monkeypatch):

    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(DatasetError, match=r'pip install "eclip\[coco\]"'):
        open_dataset("coco", coco_root)
