"""`eclip shift` is an evaluation (the records of `eclip evaluate`, plus zero-shot accuracy), and writes its report."""
from __future__ import annotations

import json

from helpers import TINY_VIT_CONFIG, make_open_clip, tiny_model
from typer.testing import CliRunner

from eclip.evaluation.output import CONTRACT


def test_measure_gives_the_records_evaluate_writes_for_the_same_scenes(tmp_path):
    from eclip.data.registry import open_dataset
    from eclip.data.synthetic import SceneConfig, write_dataset
    from eclip.evaluation import EvalConfig, evaluate
    from eclip.evaluation.zeroshot import zero_shot_accuracy
    from eclip.methods.base import get_method
    from eclip.models.loading import load_model
    from eclip.shift import measure

    root = write_dataset(tmp_path / "scenes", n=5, seed=3, config=SceneConfig(image_size=40))
    model_dir = str(tiny_model(tmp_path, "vit"))
    records = evaluate(EvalConfig("synthetic", root, models=[model_dir], methods=["itsm", "gradcam"], batch_size=4,
                                  perturbation=False), progress=False)
    dataset = open_dataset("synthetic", root)
    model = load_model(model_dir)
    measured = measure(model, {m: get_method(m) for m in ("itsm", "gradcam")}, list(dataset), dataset.classnames, "single",
                       batch_size=4, dataset="synthetic", model_label=model_dir)
    assert list(measured) == ["itsm", "gradcam", "zero_shot"]
    for want in records:
        got = measured[want["method"]]
        assert got.keys() == want.keys() and set(CONTRACT) <= got.keys()
        for key in set(want) - {"seconds", "root"}:
            assert got[key] == want[key], key  # the same maps in the same batches, scored by the same suite
        assert got["root"] is None and got["deletion_auc"] is None and got["n_pairs"] > 5
    assert measured["zero_shot"] == zero_shot_accuracy(model, list(dataset), dataset.classnames, "single")


def test_shift_command_writes_the_report(tmp_path):
    import eclip.cli as cli
    from eclip.evaluation import read_results
    from eclip.models.folder import save_model_folder

    save_model_folder(tmp_path / "a", make_open_clip("vit"), TINY_VIT_CONFIG)
    save_model_folder(tmp_path / "b", make_open_clip("vit", seed=1), {**TINY_VIT_CONFIG, "pooling": {"head": "max"}})
    result = CliRunner().invoke(cli.app, ["shift", "--model", str(tmp_path / "a"), "--model", str(tmp_path / "b"), "--n", "3",
                                          "--scene-size", "64", "--figure", "2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    records = read_results([tmp_path / "out" / "shift.json"])  # what `eclip report` reads
    assert [(r["model"][-1], r["method"]) for r in records] == [("a", "itsm"), ("a", "free_attention"),
                                                                ("b", "itsm"), ("b", "free_attention")]
    for r in records:
        assert set(CONTRACT) <= r.keys() and r["dataset"] == "synthetic" and r["data"] == "3 synthetic scenes, seed 777, 64 px"
        assert 0 <= r["inverted_rate"] <= 1 and -100 <= r["msc"] <= 100 and 0 <= r["zero_shot"] <= 1 and r["n_images"] == 3
    assert records[0]["zero_shot"] == records[1]["zero_shot"]  # one number per model
    table = (tmp_path / "out" / "shift.md").read_text()
    assert table.startswith("Semantic shift on 3 synthetic scenes") and "zero-shot % ↑" in table and "mSC % ↑" in table
    assert (tmp_path / "out" / "shift.png").stat().st_size > 1000 and (tmp_path / "out" / "shift.csv").is_file()
    assert "| synthetic | " in result.output


def test_shift_reads_a_data_folder(tmp_path):
    import eclip.cli as cli
    from eclip.data.synthetic import SceneConfig, write_dataset

    model = tiny_model(tmp_path, "vit")
    write_dataset(tmp_path / "heldout", n=4, seed=777, config=SceneConfig(image_size=40))
    result = CliRunner().invoke(cli.app, ["shift", str(tmp_path / "heldout"), "--model", str(model), "--n", "3",
                                          "--figure", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "out" / "shift.json").read_text())
    assert [r["method"] for r in records] == ["itsm", "free_attention"]
    for r in records:
        assert r["data"] == f"3 images of {tmp_path / 'heldout'}" and r["root"] == str(tmp_path / "heldout") and r["limit"] == 3
        assert r["skipped"] == 0 and r["n_pairs"] >= 3  # every scene has at least one class present


def test_images_a_data_folder_cannot_use_are_in_the_records_and_the_exit_code(tmp_path):
    import eclip.cli as cli
    from eclip.data.synthetic import SceneConfig, write_dataset

    model, broken = tiny_model(tmp_path, "vit"), "000001"
    root = write_dataset(tmp_path / "heldout", n=3, seed=5, config=SceneConfig(image_size=40))
    (root / "images" / f"{broken}.png").write_bytes(b"not a png")
    result = CliRunner().invoke(cli.app, ["shift", str(root), "--model", str(model), "--method", "itsm", "--figure", "0",
                                          "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and f"skipped {broken}" in result.output
    (record,) = json.loads((tmp_path / "out" / "shift.json").read_text())
    assert record["skipped"] == 1 and record["skipped_examples"][0].startswith(f"{broken}: ") and record["n_images"] == 2
