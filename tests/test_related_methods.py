"""The four related-work methods under the same invariants as every other: shape, range, model untouched, archs.

Per-method formulas are checked in test_decomposition, test_interactions, test_phrase and test_cliptrase.
"""
from __future__ import annotations

import pytest
import torch
from helpers import make_adapter, make_open_clip, random_images

import eclip.methods.catalogue  # noqa: F401
from eclip.errors import MethodError
from eclip.methods.base import available_methods, get_method

NEW = ["decomposition", "interactions", "phrase", "cliptrase"]
TEXTS = ["a red star", "a blue circle", "two shapes on stripes"]
FAST = {"interactions": {"steps": 3}}


def supported():
    methods = available_methods()
    return [(arch, name) for name in NEW for arch in ("vit", "resnet") if arch in methods[name].archs]


@pytest.fixture(scope="module")
def adapters():
    return {"vit": make_adapter("vit"), "resnet": make_adapter("resnet")}


def test_registered_with_papers_and_archs():
    methods = available_methods()
    for name in NEW:
        assert "arXiv" in methods[name].paper and methods[name].archs <= {"vit", "resnet"}
    assert methods["decomposition"].archs == {"vit"} and methods["cliptrase"].archs == {"vit"}
    assert methods["interactions"].archs == methods["phrase"].archs == {"vit", "resnet"}


def test_eclip_methods_lists_them():
    from typer.testing import CliRunner

    import eclip.cli as cli

    out = CliRunner().invoke(cli.app, ["methods"]).output
    for name in NEW:
        line = next(line for line in out.splitlines() if line.startswith(name + "\t"))
        assert "arXiv" in line


@pytest.mark.parametrize("arch,name", supported())
def test_maps_in_range_and_model_untouched(adapters, arch, name):
    adapter = adapters[arch]
    images = random_images(adapter, seed=1)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    own = adapter.encode_image(images)
    maps = get_method(name, **FAST.get(name, {})).explain(adapter, images, TEXTS)
    h, w = images.shape[-2:]
    assert maps.scores.shape == (2, 3, h, w)
    assert torch.isfinite(maps.scores).all() and torch.isfinite(maps.raw).all()
    assert maps.scores.min() >= 0.0 and maps.scores.max() <= 1.0
    assert maps.raw.flatten(2).std(-1).gt(0).all(), "no constant map"
    assert not torch.allclose(maps.raw[:, 0], maps.raw[:, 1]), "different texts, different maps"
    assert all(torch.equal(before[k], v) for k, v in adapter.model.state_dict().items())
    assert all(p.grad is None for p in adapter.model.parameters())
    assert torch.equal(adapter.encode_image(images), own)


@pytest.mark.parametrize("name", [n for n in NEW if "resnet" not in available_methods()[n].archs])
def test_vit_only_methods_refuse_resnets_in_one_line(adapters, name):
    with pytest.raises(MethodError, match=f"'{name}' is not defined for resnet"):
        get_method(name).explain(adapters["resnet"], random_images(adapters["resnet"]), TEXTS)


def test_same_maps_on_the_hugging_face_twin():
    """Only the adapter API is used: the same weights in HF CLIPModel give the same maps."""
    pytest.importorskip("transformers")
    from eclip.models.hf_convert import open_clip_to_hf

    oc = make_open_clip("vit")
    hf, ocd = make_adapter("vit", model=open_clip_to_hf(oc)), make_adapter("vit", model=oc)
    images = random_images(ocd)
    for name in NEW:
        a = get_method(name, **FAST.get(name, {})).explain(ocd, images, TEXTS).raw
        b = get_method(name, **FAST.get(name, {})).explain(hf, images, TEXTS).raw
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), name
