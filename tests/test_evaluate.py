"""`eclip evaluate` on tiny synthetic folders with tiny models: contract keys, --maps, resume, sharding, skips, report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_VIT_CONFIG, make_open_clip, run_evaluate, tiny_model
from PIL import Image
from typer.testing import CliRunner

import eclip.cli as cli
from eclip.data.synthetic import SceneConfig, write_dataset
from eclip.evaluation import EvalConfig, EvaluationError, evaluate, partial_path, read_results
from eclip.evaluation.output import CONTRACT
from eclip.metrics import PointingGame, ScoreContrast, ThresholdIoU
from eclip.models.folder import save_model_folder

FAST = {"deletion_steps": 1, "batch_size": 3}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth"), n=7, seed=5, config=SceneConfig(image_size=40, max_clutter=1))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {arch: tiny_model(folder, arch) for arch in ("vit", "resnet")}


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_evaluate_writes_the_contracted_records(synth, models, tmp_path, arch):
    out = tmp_path / "res.json"
    run_evaluate("--dataset", "synthetic", "--root", str(synth), "--model", str(models[arch]), "--method", "itsm", "--method", "maskclip",
        "--limit", "5", "--deletion-steps", "2", "-o", str(out))
    records = json.loads(out.read_text())
    assert [(r["dataset"], r["model"], r["method"]) for r in records] == [("synthetic", str(models[arch]), m) for m in ("itsm", "maskclip")]
    for r in records:
        expected, (first, last) = by_hand(models[arch], synth, r["method"], limit=5)
        assert set(CONTRACT) <= set(r) and r["n_images"] == 5 and r["skipped"] == 0 and r["n_pairs"] == expected.pop("n_pairs")
        for key, value in expected.items():
            assert r[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (r["method"], key)  # msc is in percent
        assert len(r["deletion_curve"]) == 3 and r["deletion_curve"][0] != pytest.approx(last, abs=1e-4)
        assert (r["deletion_curve"][0], r["deletion_curve"][-1]) == pytest.approx((first, last), abs=1e-5)
        assert (r["insertion_curve"][0], r["insertion_curve"][-1]) == pytest.approx((last, first), abs=1e-5)
    assert out.with_suffix(".csv").read_text().startswith(",".join(CONTRACT))
    assert "| synthetic |" in out.with_suffix(".md").read_text() and not partial_path(out).exists()


def by_hand(model_path: Path, root: Path, method: str, limit: int) -> dict:
    """The record's numbers computed from the public pieces, image by image: the method's maps of
    each class present (resized as every map is), the metrics on them, and the two ends of the
    deletion curves, whose values are known: the cosine of the image, then of its blurred copy."""
    from eclip.data.registry import open_dataset
    from eclip.evaluation.maps import class_text_features, prepare
    from eclip.methods.base import get_method, maps_to_size
    from eclip.metrics.faithfulness import baseline_images
    from eclip.models.loading import load_model

    model, dataset = load_model(str(model_path)), open_dataset("synthetic", root, limit=limit)
    text = class_text_features(model, dataset.classnames, "single")
    iou, contrast, pointing = ThresholdIoU(), ScoreContrast(), PointingGame()
    ends = []
    # one batch of all `limit` images, as `evaluate` runs them (its batch size is larger than the limit): the
    # tiny ResNet's maps are nearly flat, so the float noise of another batch shape would move the min-max
    # normalised maps by more than the tolerance; the same batch computes the same raw maps
    prepared = [prepare(sample, list(dataset.classnames)) for sample in dataset]
    batch_images = model.preprocess([p.image for p in prepared])
    batch_raw = get_method(method).explain(model, batch_images, text).raw
    for b, p in enumerate(prepared):
        maps = maps_to_size(batch_raw[b, p.class_index], p.size)
        for metric in (iou, contrast, pointing):
            metric.update(maps, p.masks, p.ignore)
        images = batch_images[b : b + 1]
        with torch.no_grad():
            cos = [F.normalize(model.encode_image(x).float(), dim=-1) @ text[p.class_index].T for x in (images, baseline_images(images))]
        ends += [(float(cos[0][0, j]), float(cos[1][0, j])) for j, ok in enumerate(p.defined) if ok]
    first, last = np.mean([e[0] for e in ends]), np.mean([e[1] for e in ends])
    i, c = iou.compute(), contrast.compute()
    return {"n_pairs": i["n_pairs"], "threshold": i["threshold"], "fg_iou": i["fg_iou"], "miou": i["miou"], "msc": c["msc"],
            "inverted_rate": c["inverted_rate"], "pointing_game": pointing.compute()["pointing_game"]}, (first, last)


def test_a_method_undefined_for_the_architecture_gives_an_empty_record(synth, models, tmp_path):
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--model", str(models["resnet"]), "--method", "rollout", "--limit", "2", "--no-perturbation",
        "-o", str(out))
    (record,) = json.loads(out.read_text())
    assert record["n_pairs"] == 0 and record["fg_iou"] is None and "not defined for resnet" in record["error"]


def test_a_method_undefined_for_the_pooling_head_is_skipped_and_the_others_run(synth, tmp_path):
    """Decomposition needs a pooled embedding that is a sum over tokens; a max-pooled model gets an
    empty record with the reason, and the run goes on with the other method."""
    folder = save_model_folder(tmp_path / "tiny-max", make_open_clip("vit"), {**TINY_VIT_CONFIG, "pooling": {"head": "max"}})
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--model", str(folder), "--method", "decomposition", "--method", "itsm", "--limit", "2",
        "--no-perturbation", "-o", str(out))
    records = {r["method"]: r for r in json.loads(out.read_text())}
    assert records["decomposition"]["n_pairs"] == 0 and "linear pooling" in records["decomposition"]["error"]
    assert records["itsm"]["n_pairs"] > 0 and records["itsm"]["fg_iou"] is not None


def test_localisation_scores_do_not_depend_on_the_perturbation_switch(synth, models):
    config = {"models": [str(models["vit"])], "methods": ["itsm", "gradcam"], "limit": 3, **FAST}
    with_curves = evaluate(EvalConfig("synthetic", synth, **config), progress=False)
    without = evaluate(EvalConfig("synthetic", synth, perturbation=False, **config), progress=False)
    for a, b in zip(with_curves, without):
        assert b["deletion_auc"] is None and a["deletion_auc"] is not None
        assert [a[k] for k in CONTRACT[3:10]] == [b[k] for k in CONTRACT[3:10]]


def _hand_maps(sample) -> dict[str, np.ndarray]:
    """Maps with known content: a softened copy of each mask (min 0, max 1), one class inverted."""
    out = {}
    for j, (cls, mask) in enumerate(sample.masks.items()):
        m = np.where(mask, 0.8, 0.1).astype(np.float32)
        m[0, 0], m[-1, -1] = 0.0, 1.0
        out[cls] = 1 - m if j == 1 else m
    return out


def test_maps_folder_scores_equal_the_metrics_on_those_maps(synth, tmp_path):
    from eclip.data.registry import open_dataset

    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    iou, contrast, pointing = ThresholdIoU(), ScoreContrast(), PointingGame()
    missing = 0
    for i, sample in enumerate(open_dataset("synthetic", synth)):
        maps = _hand_maps(sample)
        if i == 0:
            missing += len(maps)  # no file at all
            continue
        if i == 1 and len(maps) > 1:
            maps.pop(next(iter(maps)))  # one class left out
            missing += 1
        np.savez(maps_dir / f"{sample.image_id}.npz", **maps)
        for cls, m in maps.items():
            for metric in (iou, contrast, pointing):
                metric.update(m, sample.masks[cls])
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--maps", str(maps_dir), "-o", str(out))
    (record,) = json.loads(out.read_text())
    assert record["model"] == f"maps:{maps_dir}" and record["method"] == "maps" and record["missing"] == missing
    assert record["deletion_auc"] is None and record["insertion_auc"] is None
    expected = {**iou.compute(), **contrast.compute(), **pointing.compute()}
    for key in ("n_pairs", "threshold", "fg_iou", "miou", "msc", "inverted_rate", "pointing_game"):
        assert record[key] == pytest.approx(expected[key]), key


def test_maps_with_the_wrong_shape_are_counted_not_fatal(synth, tmp_path):
    from eclip.data.registry import open_dataset

    maps_dir = tmp_path / "maps"
    maps_dir.mkdir()
    for sample in open_dataset("synthetic", synth, limit=2):
        np.savez(maps_dir / f"{sample.image_id}.npz", **{c: np.zeros((3, 3)) for c in sample.masks})
    records = evaluate(EvalConfig("synthetic", synth, models=[], maps_dir=maps_dir, limit=2), progress=False)
    assert records[0]["n_pairs"] == 0 and records[0]["missing"] > 0 and "shape (3, 3)" in records[0]["missing_examples"][0]
    with pytest.raises(EvaluationError, match="no such folder of maps"):
        evaluate(EvalConfig("synthetic", synth, models=[], maps_dir=tmp_path / "nowhere"), progress=False)


def test_resume_after_an_interruption_equals_one_pass(synth, models, tmp_path, monkeypatch):
    from eclip.evaluation.sources import ModelSource

    config = EvalConfig("synthetic", synth, models=[str(models["vit"])], methods=["itsm", "gradcam"], checkpoint_every=100, **FAST)
    whole = evaluate(config, progress=False)
    partial = tmp_path / "res.partial.json"
    original, calls = ModelSource.update, []

    def crash_on_third_batch(self, batch, suites):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, batch, suites)

    monkeypatch.setattr(ModelSource, "update", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, partial=partial, progress=False)
    saved = json.loads(partial.read_text())["sources"][f"model:{models['vit']}"]
    assert saved["done"] == 6 and not saved["complete"]  # saved at the crash: the two complete batches
    monkeypatch.setattr(ModelSource, "update", original)
    resumed = evaluate(config, partial=partial, resume=True, progress=False)
    assert len(resumed) == len(whole) == 2
    for got, want in zip(resumed, whole):
        assert got.keys() == want.keys()
        for key in set(want) - {"seconds"}:
            numbers = isinstance(want[key], float) or (isinstance(want[key], list) and want[key] and isinstance(want[key][0], float))
            if numbers:
                assert np.allclose(got[key], want[key], rtol=1e-9, atol=1e-12), key
            else:
                assert got[key] == want[key], key
    with pytest.raises(EvaluationError, match="different evaluation"):
        evaluate(EvalConfig("synthetic", synth, models=[str(models["vit"])], limit=3), partial=partial, resume=True, progress=False)


@pytest.mark.slow
def test_torchrun_two_processes_give_the_single_process_records(synth, models, tmp_path):
    """A real `torchrun --nproc_per_node 2` (gloo) run of `eclip evaluate`: rank r takes images r, r + 2, ...;
    the metric sums are all-reduced, rank 0 writes the records, equal to one process's."""
    eclip_bin = Path(sys.executable).parent / "eclip"
    args = ["evaluate", "--root", str(synth), "--model", str(models["vit"]), "--method", "itsm", "--method", "gradcam",
            "--deletion-steps", "1", "--batch-size", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([str(eclip_bin), *args, "-o", str(one)], check=True, env=env, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
                           str(eclip_bin), *args, "-o", str(two)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    single, sharded = json.loads(one.read_text()), json.loads(two.read_text())
    assert [r["world_size"] for r in sharded] == [2, 2] and [r["world_size"] for r in single] == [1, 1]
    assert not list(tmp_path.glob("two.partial*")), "each rank removes its partial file"
    for a, b in zip(single, sharded):
        assert a["n_images"] == b["n_images"] == 7 and a["n_pairs"] == b["n_pairs"] > 7
        for key in CONTRACT[3:] + ("deletion_curve", "insertion_curve", "fg_iou_by_threshold"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), (a["method"], key)


def test_broken_images_missing_masks_and_unknown_class_ids_are_counted_skips(models, tmp_path):
    root = write_dataset(tmp_path / "s", n=5, seed=2, config=SceneConfig(image_size=40))
    (root / "images" / "000002.png").write_bytes(b"\x89PNG broken")
    (root / "masks" / "000003.png").unlink()
    Image.fromarray(np.full((40, 40), 200, dtype=np.uint8)).save(root / "masks" / "000004.png")  # class id 200: no such class
    out = tmp_path / "res.json"
    result = run_evaluate("--root", str(root), "--model", str(models["vit"]), "--no-perturbation", "-o", str(out))
    (record,) = json.loads(out.read_text())
    assert record["skipped"] == 3 and record["n_images"] == 2 and record["n_pairs"] > 0
    assert [e.split(":")[0] for e in record["skipped_examples"]] == ["000002", "000003", "000004"]
    assert "skipped 3 image" in result.output


def test_report_writes_figure_and_page_with_overlays(synth, models, tmp_path):
    out = tmp_path / "res.json"
    run_evaluate("--root", str(synth), "--model", str(models["vit"]), "--limit", "3", "--deletion-steps", "2", "-o", str(out))
    assert read_results([out])[0]["method"] == "itsm"
    report = tmp_path / "report"
    result = CliRunner().invoke(cli.app, ["report", str(out), "-o", str(report), "--dataset", "synthetic", "--root", str(synth),
                                          "--examples", "2"])
    assert result.exit_code == 0, (result.output, result.exception)
    html = (report / "index.html").read_text()
    assert "metrics.png" in html and "<table" in html and html.count("<img") >= 3
    assert Image.open(report / "metrics.png").size[0] > 300
    assert len(list((report / "overlays").glob("*.png"))) == 2


def test_a_folder_that_is_no_dataset_is_one_clear_error_before_any_work(tmp_path):
    from eclip.errors import DatasetError

    result = CliRunner().invoke(cli.app, ["evaluate", "--root", str(tmp_path), "--no-progress", "-o", str(tmp_path / "r.json")])
    assert isinstance(result.exception, DatasetError) and "meta.json" in str(result.exception)
    assert not (tmp_path / "r.json").exists()
