"""The report's example figures show the contrasts the table's mSC averages, on a VOC folder with ignored pixels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_evaluate, tiny_model
from PIL import Image
from typer.testing import CliRunner

import eclip.cli as cli

#: (height, width, objects as (class id, top, left, bottom, right)) of each image; VOC ids: 1 aeroplane, 8 cat, 15 person.
IMAGES = {"2008_000001": (40, 56, [(1, 4, 6, 20, 30), (15, 24, 34, 38, 54)]),
          "2008_000002": (48, 40, [(8, 10, 8, 40, 32)]),
          "2008_000003": (36, 60, [(15, 2, 2, 18, 20), (8, 20, 30, 34, 58)])}


def voc_folder(base: Path) -> Path:
    """VOCdevkit/VOC2012 with noise JPEGs and grayscale label PNGs whose objects have a 2-pixel 255 border (VOC's ignore)."""
    root = base / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id, (h, w, objects) in IMAGES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
        labels = np.zeros((h, w), dtype=np.uint8)
        for cls, top, left, bottom, right in objects:
            labels[max(0, top - 2) : bottom + 2, max(0, left - 2) : right + 2] = 255
            labels[top:bottom, left:right] = cls
        Image.fromarray(labels, mode="L").save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{i}\n" for i in IMAGES))
    return base


def test_the_overlays_contrasts_average_to_the_tables_msc_on_voc(tmp_path, monkeypatch):
    import eclip.report.overlay as overlay

    root, model = voc_folder(tmp_path / "voc"), tiny_model(tmp_path, "vit")
    results = tmp_path / "res.json"
    # all images in one batch, as the examples explain them: the same maps, not just maps equal up to float noise
    run_evaluate("--dataset", "voc", "--root", str(root), "--model", str(model), "--template", "a photo of a {}.",
                 "--batch-size", str(len(IMAGES)), "--no-perturbation", "-o", str(results))
    (record,) = json.loads(results.read_text())
    drawn = []
    monkeypatch.setattr(overlay, "image_figure", lambda image_id, image, classes, masks, columns, out:
                        drawn.append((image_id, *columns)) or out)
    result = CliRunner().invoke(cli.app, ["report", str(results), "-o", str(tmp_path / "report"), "--dataset", "voc", "--root",
                                          str(root), "--examples", str(len(IMAGES))])
    assert result.exit_code == 0, (result.output, result.exception)
    assert [image_id for image_id, *_ in drawn] == list(IMAGES)
    assert all(len(columns) == 1 for _, *columns in drawn)  # one record: one column of maps per image
    contrasts = [c for _, (_, _, values) in drawn for c in values]
    assert record["n_pairs"] == len(contrasts) == 5 and not np.isnan(contrasts).any()
    assert 100 * np.mean(contrasts) == pytest.approx(record["msc"], rel=1e-9, abs=1e-12)

    # the ignored border matters here: the contrast taken over every pixel (how the overlays were captioned before) differs
    from eclip.data.registry import open_dataset

    everywhere = []
    for sample, (_, (_, maps, _)) in zip(open_dataset("voc", root), drawn):
        assert sample.ignore is not None and sample.ignore.any()
        everywhere += [float(m[mask].mean() - m[~mask].mean()) for m, mask in zip(maps, sample.masks.values())]
    assert abs(100 * np.mean(everywhere) - record["msc"]) > 1e-3
