"""`eclip explain` writes the contracted files, skips bad images, and says so in its exit code."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY_VIT_CONFIG
from PIL import Image
from typer.testing import CliRunner

import eclip.cli as cli

CONFIG = TINY_VIT_CONFIG



@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8)).save(folder / "gray.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def test_explain_writes_overlay_maps_and_scores(model_dir, images, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["explain", str(images / "wide.png"), str(images / "gray.jpg"),
                                          "--text", "a red star", "--text", "a blue circle", "--model", str(model_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    maps = np.load(out / "wide.npy")
    assert maps.dtype == np.float32 and maps.shape == (2, 40, 60)
    assert maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0.5
    assert np.load(out / "gray.npy").shape == (2, 50, 30)
    record = json.loads((out / "wide.json").read_text())
    assert record["texts"] == ["a red star", "a blue circle"]
    assert [s["text"] for s in record["scores"]] == ["a red star", "a blue circle"]
    assert record["image_size"] == record["map_size"] == [40, 60]
    assert Image.open(out / "wide.png").size[0] > 100


def test_repeated_texts_keep_one_map_and_one_score_each_in_order(model_dir, images, tmp_path):
    out = tmp_path / "out"
    texts = ["a star", "a ring", "a star"]
    result = CliRunner().invoke(cli.app, ["explain", str(images / "wide.png"), *[f for t in texts for f in ("--text", t)],
                                          "--model", str(model_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    maps = np.load(out / "wide.npy")
    record = json.loads((out / "wide.json").read_text())
    assert maps.shape[0] == 3 and [s["text"] for s in record["scores"]] == texts
    np.testing.assert_array_equal(maps[0], maps[2])
    assert record["scores"][0] == {**record["scores"][2], "text": "a star"}


def test_map_size_caps_the_saved_maps_and_zero_keeps_the_image_size(model_dir, images, tmp_path):
    for cap, expected in ((30, (20, 30)), (0, (40, 60))):
        out = tmp_path / f"out{cap}"
        result = CliRunner().invoke(cli.app, ["explain", str(images / "wide.png"), "--text", "a star", "--model", str(model_dir),
                                              "--map-size", str(cap), "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert np.load(out / "wide.npy").shape == (1, *expected)
        assert json.loads((out / "wide.json").read_text())["map_size"] == list(expected)


def test_a_bad_file_is_reported_skipped_and_fails_the_exit_code(model_dir, images, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["explain", str(images), "--text", "a star", "--model", str(model_dir), "-o", str(out)])
    assert result.exit_code == 1
    assert "broken.png" in result.output
    assert (out / "wide.npy").exists() and (out / "gray.npy").exists()
    assert not (out / "broken.npy").exists()


def test_unknown_model_is_one_clear_line(images, tmp_path):
    result = CliRunner().invoke(cli.app, ["explain", str(images / "wide.png"), "--text", "x", "--model", "no-such-model"])
    assert result.exit_code != 0
    assert "unknown model 'no-such-model'" in str(result.exception)


def test_method_options_reach_the_maps_and_the_record(model_dir, images, tmp_path):
    """`--method NAME:KEY=VALUE,...`: the options change the maps, and the record names the method by its canonical label."""
    outs = {}
    for spec in ("maskclip", "maskclip: ffn=false ,residual=0"):
        out = outs[spec] = tmp_path / spec.replace(":", "_").replace(" ", "")
        result = CliRunner().invoke(cli.app, ["explain", str(images / "wide.png"), "--text", "a star", "--text", "a ring",
                                              "--model", str(model_dir), "--method", spec, "-o", str(out)])
        assert result.exit_code == 0, result.output
    plain, bare = (np.load(out / "wide.npy") for out in outs.values())
    assert not np.allclose(plain, bare, atol=1e-3)
    assert json.loads((outs["maskclip"] / "wide.json").read_text())["method"] == "maskclip"
    record = json.loads((outs["maskclip: ffn=false ,residual=0"] / "wide.json").read_text())
    assert record["method"] == "maskclip:ffn=false,residual=false"


def test_a_misspelt_method_or_option_is_one_line_with_the_closest_name(model_dir, images, tmp_path, capsys):
    for spec, expected in (("maskclp", "unknown method 'maskclp' (did you mean 'maskclip'?)"),
                           ("maskclip:resdual=false", "no option 'resdual' (did you mean 'residual'?)"),
                           ("maskclip:residual=sometimes", "option residual='sometimes': expected bool")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["explain", str(images / "wide.png"), "--text", "a star", "--model", str(model_dir), "--method", spec,
                      "-o", str(tmp_path / "never")])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "never").exists()


def test_interactions_names_a_text_of_function_words_that_gets_no_panel(model_dir, images, tmp_path):
    """`interactions` draws a panel per content word: a text of function words alone is named, not silently left out."""
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["explain", str(images / "wide.png"), "--text", "a red star", "--text", "of the",
                                          "--method", "interactions:steps=2", "--model", str(model_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("eclip: warning:")]
    assert len(warnings) == 1 and "'of the'" in warnings[0] and "no content word" in warnings[0], result.output
    assert "'a red star'" not in result.output
    record = json.loads((out / "wide.json").read_text())
    assert [w["word"] for w in record["interactions"]["a red star"]["words"]] == ["red", "star"]
    assert record["interactions"]["of the"]["words"] == []
