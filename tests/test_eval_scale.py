"""Evaluation at scale: images decoded by DataLoader workers give the same records; reduced precision is recorded and close."""
from __future__ import annotations

import pytest
from helpers import tiny_model

from eclip.data.synthetic import SceneConfig, write_dataset
from eclip.evaluation import EvalConfig, EvaluationError, evaluate
from eclip.evaluation.output import CONTRACT


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    synth = write_dataset(tmp_path_factory.mktemp("synth"), n=7, seed=5, config=SceneConfig(image_size=40, max_clutter=1))
    return synth, str(tiny_model(tmp_path_factory.mktemp("models"), "vit"))


def _records(setup, **options):
    synth, model = setup
    config = EvalConfig("synthetic", synth, models=[model], methods=["itsm", "gradcam"], batch_size=3, perturbation=False, **options)
    return evaluate(config, progress=False)


def test_workers_decode_the_images_and_change_no_number(setup):
    plain, parallel = _records(setup), _records(setup, workers=2)
    for a, b in zip(plain, parallel):
        assert a["n_images"] == b["n_images"] == 7
        assert [a[k] for k in CONTRACT[3:10]] == [b[k] for k in CONTRACT[3:10]]


def test_bf16_maps_score_close_to_fp32(setup):
    exact, low = _records(setup), _records(setup, precision="bf16")
    for a, b in zip(exact, low):
        assert a["n_pairs"] == b["n_pairs"] > 0
        assert b["msc"] == pytest.approx(a["msc"], abs=2.0)  # percent points
    with pytest.raises(EvaluationError, match="precision='half'"):
        EvalConfig("synthetic", setup[0], models=[setup[1]], precision="half")
