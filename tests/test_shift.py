"""The semantic-shift numbers follow their definitions, and `eclip shift` writes its report."""
from __future__ import annotations

import json

import numpy as np
from helpers import TEXT_CFG, VIT_CFG, make_open_clip
from typer.testing import CliRunner

from eclip.shift import ShiftAccumulator


def test_accumulator_on_hand_made_maps():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 2:5] = True
    acc = ShiftAccumulator()
    acc.update(mask.astype(np.float32), mask)  # perfect map
    acc.update(1.0 - mask.astype(np.float32), mask)  # opposite visualization
    out = acc.compute()
    assert out["pairs"] == 2 and out["inverted_rate"] == 0.5
    assert abs(out["score_contrast"]) < 1e-9  # +1 and -1
    assert out["fg_iou"] == 0.5 and 0 < out["threshold"] <= 1  # IoU 1 and 0 at any threshold in (0, 1]
    assert out["pointing"] == 0.5
    ramp = ShiftAccumulator()
    ramp.update(np.where(mask, 0.6, 0.2).astype(np.float32), mask)
    assert abs(ramp.compute()["score_contrast"] - 0.4) < 1e-6 and ramp.compute()["inverted_rate"] == 0.0


def test_shift_command_writes_the_report(tmp_path):
    import eclip.cli as cli
    from eclip.models.folder import save_model_folder

    config = {"arch": "vit", "open_clip": {"embed_dim": 24, "vision_cfg": dict(VIT_CFG), "text_cfg": dict(TEXT_CFG)},
              "preprocess": {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_folder(tmp_path / "a", make_open_clip("vit"), config)
    save_model_folder(tmp_path / "b", make_open_clip("vit", seed=1), {**config, "pooling": {"head": "max"}})
    result = CliRunner().invoke(cli.app, ["shift", "--model", str(tmp_path / "a"), "--model", str(tmp_path / "b"), "--n", "3",
                                          "--scene-size", "64", "--figure", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "shift.json").read_text())
    assert [(r["model"][-1], r["method"]) for r in report["rows"]] == [("a", "itsm"), ("a", "free_attention"),
                                                                        ("b", "itsm"), ("b", "free_attention")]
    assert all(0 <= r["inverted_rate"] <= 1 and -1 <= r["score_contrast"] <= 1 for r in report["rows"])
    assert (tmp_path / "out" / "shift.png").stat().st_size > 1000 and "| model |" in (tmp_path / "out" / "shift.md").read_text()


def test_shift_reads_a_data_folder(tmp_path):
    import eclip.cli as cli
    from eclip.data.synthetic import SceneConfig, write_dataset
    from eclip.models.folder import save_model_folder

    config = {"arch": "vit", "open_clip": {"embed_dim": 24, "vision_cfg": dict(VIT_CFG), "text_cfg": dict(TEXT_CFG)},
              "preprocess": {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_folder(tmp_path / "tiny", make_open_clip("vit"), config)
    write_dataset(tmp_path / "heldout", n=4, seed=777, config=SceneConfig(image_size=40))
    result = CliRunner().invoke(cli.app, ["shift", str(tmp_path / "heldout"), "--model", str(tmp_path / "tiny"), "--n", "3",
                                          "--figure", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "shift.json").read_text())
    assert report["data"] == f"3 images of {tmp_path / 'heldout'}" and report["skipped"] == []
    assert [r["method"] for r in report["rows"]] == ["itsm", "free_attention"]
    assert all(r["pairs"] >= 3 for r in report["rows"])  # every scene has at least one class present
