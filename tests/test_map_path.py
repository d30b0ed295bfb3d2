"""One map path: `eclip explain`, `eclip evaluate`, the figures of `eclip shift` / `demo` and the library API give the same map."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY_VIT_CONFIG, make_adapter
from PIL import Image
from typer.testing import CliRunner

import eclip.cli as cli
import eclip.explain as explain_lib
from eclip.data.registry import open_dataset
from eclip.data.synthetic import CLASSNAMES, SceneConfig, write_dataset
from eclip.evaluation.suite import MetricSuite
from eclip.methods.base import get_method, maps_to_size
from eclip.models.loading import load_model

CONFIG = TINY_VIT_CONFIG



@pytest.fixture
def scene_root(tmp_path):
    return write_dataset(tmp_path / "scenes", n=1, seed=4, config=SceneConfig(image_size=52, min_objects=2, max_objects=3))


def test_explain_npy_is_the_map_evaluate_scores_and_shift_draws(model_dir, scene_root, tmp_path, monkeypatch):
    explained = tmp_path / "explained"
    texts = [flag for name in CLASSNAMES for flag in ("--text", name)]
    result = CliRunner().invoke(cli.app, ["explain", str(scene_root / "images"), *texts, "--template", "a photo of a {}.",
                                          "--model", str(model_dir), "-o", str(explained)])
    assert result.exit_code == 0, result.output
    npy = np.load(explained / "000000.npy")

    scored: list[torch.Tensor] = []
    update_pairs = MetricSuite.update_pairs
    monkeypatch.setattr(MetricSuite, "update_pairs", lambda self, maps, *a, **k: (scored.append(maps.clone()),
                                                                                   update_pairs(self, maps, *a, **k))[1])
    result = CliRunner().invoke(cli.app, ["evaluate", "--dataset", "synthetic", "--root", str(scene_root), "--model", str(model_dir),
                                          "--no-perturbation", "--no-progress", "-o", str(tmp_path / "eval" / "r.json")])
    assert result.exit_code == 0, result.output
    sample = open_dataset("synthetic", scene_root)[0]
    present = [CLASSNAMES.index(c) for c in sample.masks]
    assert len(scored) == 1 and scored[0].shape == (len(present), 52, 52) and len(present) >= 2
    np.testing.assert_allclose(scored[0].numpy(), npy[present], rtol=0, atol=1e-6)

    from eclip.evaluation.maps import Panel, panel_maps, prepare

    (drawn,) = panel_maps([Panel("itsm", load_model(str(model_dir)), get_method("itsm"))], [prepare(sample, CLASSNAMES)], CLASSNAMES)
    np.testing.assert_allclose(drawn.per_sample()[0].numpy(), npy[present], rtol=0, atol=1e-6)


def test_explain_images_and_files_agree_and_saved_chunks_equal_the_maps(tmp_path, monkeypatch):
    model = make_adapter("vit")
    method = get_method("itsm")
    texts = ["a red star", "a blue ring", "a red star"]
    features = model.encode_text(texts)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (45, 70, 3), dtype=np.uint8))
    image.save(tmp_path / "a.png")
    [in_memory] = list(explain_lib.explain_images(model, method, [(None, image)], features, texts))
    [from_file] = list(explain_lib.explain_files(model, method, [tmp_path / "a.png"], features, texts))
    np.testing.assert_array_equal(in_memory.maps(), from_file.maps())
    np.testing.assert_array_equal(in_memory.cosine, from_file.cosine)
    assert in_memory.maps().shape == (3, 45, 70) and in_memory.size == (45, 70)
    # Method.explain's scores at the input size come out of the same function
    images = model.preprocess([image])
    np.testing.assert_array_equal(method.explain(model, images, features).scores[0].numpy(), in_memory.maps(tuple(images.shape[-2:])))

    monkeypatch.setattr(explain_lib, "CHUNK_PIXELS", 45 * 70)  # one text per chunk
    shape = explain_lib.save_maps(tmp_path / "a.npy", in_memory)
    assert shape == (3, 45, 70)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), in_memory.maps())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_maps_to_size_normalises_on_the_grid_then_resizes():
    raw = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[1.0, 1.0], [1.0, 1.0]]])
    out = maps_to_size(raw, (4, 4))
    assert out.shape == (2, 4, 4)
    assert torch.equal(maps_to_size(raw, (2, 2))[0], raw[0] / 8)  # same size: only normalised
    assert float(out[0].min()) == 0.0 and float(out[0].max()) == 1.0  # corners keep the grid's extremes
    assert torch.count_nonzero(out[1]) == 0  # a constant map has nothing that stands out
    assert explain_lib.fit_within((6000, 8000), 2048) == (1536, 2048) and explain_lib.fit_within((40, 60), 0) == (40, 60)
