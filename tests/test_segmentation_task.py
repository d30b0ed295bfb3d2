"""`eclip evaluate --task segmentation`: the argmax over all classes through the one evaluation path.

Maps equal to the ground truth score mIoU 1; a class missing from a file scores 0 everywhere; the
records of a model equal `score_dataset` of the same segmenter; a run killed mid-way and resumed
equals one pass; the report shows the segmentation table and a label figure per image.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_evaluate, tiny_model
from PIL import Image
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.synthetic import SceneConfig, SyntheticEval, write_dataset
from eclip.evaluation import EvalConfig, evaluate
from eclip.evaluation.segment import SegmentingSource, make_segmenter
from eclip.methods.base import get_method
from eclip.models.loading import load_model
from eclip.segmentation.score import score_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth"), n=6, seed=11, config=SceneConfig(image_size=40, max_clutter=1))


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models"), "vit")


def write_truth_maps(root: Path, out: Path, drop: str | None = None) -> Path:
    """DIR/<image_id>.npz with each present class's mask as its map (background not given: it scores 0), minus `drop`."""
    out.mkdir(parents=True, exist_ok=True)
    for sample in SyntheticEval(root):
        arrays = {name: mask.astype(np.float32) for name, mask in sample.masks.items() if name != drop}
        np.savez(out / f"{sample.image_id}.npz", **arrays)
    return out


def test_maps_equal_to_the_ground_truth_score_one(synth, tmp_path):
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--task", "segmentation", "--maps", str(write_truth_maps(synth, tmp_path / "maps")),
                 "-o", str(out))
    (record,) = json.loads(out.read_text())
    assert record["task"] == "segmentation" and record["model"].startswith("maps:") and record["n_images"] == 6
    assert record["miou"] == record["pixel_accuracy"] == record["mean_accuracy"] == 1.0
    assert record["classes"][0] == "background" and record["n_pixels"] == 6 * 40 * 40
    assert "mIoU %" in out.with_suffix(".md").read_text()


def test_a_class_missing_from_the_files_scores_zero_everywhere(synth, tmp_path):
    present = {name for sample in SyntheticEval(synth) for name in sample.masks}
    dropped = sorted(present)[0]
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--task", "segmentation", "--maps",
                 str(write_truth_maps(synth, tmp_path / "maps", drop=dropped)), "-o", str(out))
    (record,) = json.loads(out.read_text())
    iou = dict(zip(record["classes"], record["per_class_iou"]))
    assert iou[dropped] == 0.0  # never predicted: its pixels went to the background (index 0), all maps being 0 there
    assert 0.0 < iou["background"] < 1.0 and record["miou"] < 1.0 and record["missing"] == 0
    assert all(v == 1.0 for name, v in iou.items() if name not in (dropped, "background") and v is not None)


def test_a_missing_file_is_counted_and_left_out(synth, tmp_path):
    maps = write_truth_maps(synth, tmp_path / "maps")
    first = sorted(maps.glob("*.npz"))[0]
    first.unlink()
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--task", "segmentation", "--maps", str(maps), "-o", str(out))
    (record,) = json.loads(out.read_text())
    assert record["missing"] == 1 and record["n_images"] == 5 and record["miou"] == 1.0
    assert first.name in record["missing_examples"][0]


def test_model_records_equal_score_dataset_of_the_same_segmenter(synth, vit):
    config = EvalConfig("synthetic", synth, models=[str(vit)], methods=["itsm", "sclip"], task="segmentation", batch_size=4)
    records = evaluate(config, progress=False)
    model = load_model(str(vit))
    dataset = SyntheticEval(synth)
    for record in records:
        segmenter = make_segmenter(model, get_method(record["method"]), "synthetic", dataset.classnames)
        metric = score_dataset(segmenter, dataset).compute()
        assert record["miou"] == metric["miou"] and record["pixel_accuracy"] == metric["pixel_accuracy"], record["method"]
        assert record["n_images"] == 6 and record["templates"] == "single" and "SCLIP" in record["protocol"]
        assert "fg_iou" not in record and "threshold_step" not in record


def test_resume_after_an_interruption_equals_one_pass(synth, vit, tmp_path, monkeypatch):
    config = EvalConfig("synthetic", synth, models=[str(vit)], methods=["itsm"], task="segmentation", batch_size=2)
    whole = evaluate(config, progress=False)
    original, calls = SegmentingSource.update, []

    def crash_on_second_batch(self, batch, suites):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, batch, suites)

    partial = tmp_path / "res.partial.json"
    monkeypatch.setattr(SegmentingSource, "update", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, partial=partial, progress=False)
    assert json.loads(partial.read_text())["sources"][f"model:{vit}"]["done"] == 2
    monkeypatch.setattr(SegmentingSource, "update", original)
    (resumed,) = evaluate(config, partial=partial, resume=True, progress=False)
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in whole[0].items() if k != "seconds"}


def test_a_dataset_without_a_segmentation_benchmark_is_one_clear_error(synth):
    from eclip.errors import DatasetError
    from eclip.evaluation.runner import Evaluation, SampleList

    samples = SampleList([SyntheticEval(synth)[0]], SyntheticEval(synth).classnames, name="coco")
    with pytest.raises(DatasetError, match="'coco' has no segmentation benchmark; use one of voc, voc21"):
        Evaluation(EvalConfig("coco", None, models=["synth-vit"], task="segmentation"), dataset=samples)


def test_report_shows_the_segmentation_table_and_label_figures(synth, vit, tmp_path):
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--task", "segmentation", "--model", str(vit), "--method", "itsm", "--limit", "3",
                 "-o", str(out))
    report = tmp_path / "report"
    result = CliRunner().invoke(cli.app, ["report", str(out), "-o", str(report), "--dataset", "synthetic", "--root", str(synth),
                                          "--examples", "2"])
    assert result.exit_code == 0, (result.output, result.exception)
    html = (report / "index.html").read_text()
    assert "Segmentation" in html and "mIoU %" in html and "metrics.png" not in html
    figures = sorted((report / "segmentations").glob("*.png"))
    assert len(figures) == 2 and Image.open(figures[0]).size[0] > 400
