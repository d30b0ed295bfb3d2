"""Golden tests: every method's default maps equal its authors' code on the same weights and inputs.

The fixtures (`fixtures/<case>.npz`) hold the maps the reference repositories computed on the
golden CLIPs of `golden_models.py` (see `make_fixtures.py` for how each was run). Here eclip
explains the same preprocessed images with the same text embeddings, and its maps, min-max
normalised on the dense grid like the fixtures, must match to float rounding. The differences a
wrong default gave before (CLIP Surgery's per-location text weights: 0.14; Grad-ECLIP's heads:
5e-3; Chefer's score without the logit scale: 7e-4) are far above the tolerance.

    python tests/golden/test_golden.py      # prints the max abs difference of every case
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import golden_models as golden  # noqa: E402
from make_fixtures import FIXTURES, pixels, preprocess  # noqa: E402

from eclip.methods.base import get_method, minmax_normalise  # noqa: E402

TOLERANCE = 5e-5

#: case -> (eclip method, its options, architecture); the options are the defaults unless the case
#: checks a named option against the matching setting of the reference.
CASES = {
    "surgery-vit": ("surgery", {}, "vit"),
    "surgery-vit-single": ("surgery", {}, "vit"),
    "surgery-resnet": ("surgery", {}, "resnet"),
    "surgery-resnet-single": ("surgery", {}, "resnet"),
    "gem-vit": ("gem", {}, "vit"),
    "legrad-vit": ("legrad", {}, "vit"),
    "chefer-vit": ("chefer", {}, "vit"),
    "chefer-vit-all": ("chefer", {"start_layer": 0}, "vit"),
    "grad_eclip-vit": ("grad_eclip", {}, "vit"),
    "grad_eclip-vit-2": ("grad_eclip", {"layers": 2}, "vit"),
    "sclip-vit": ("sclip", {}, "vit"),
    "naclip-vit": ("naclip", {}, "vit"),
    "clearclip-vit": ("clearclip", {}, "vit"),
    "maskclip-vit": ("maskclip", {}, "vit"),
    "maskclip-vit-bare": ("maskclip", {"residual": False, "ffn": False}, "vit"),
}

_ADAPTERS: dict[str, object] = {}


def adapter(arch: str):
    if arch not in _ADAPTERS:
        _ADAPTERS[arch] = golden.load_adapter(arch)
    return _ADAPTERS[arch]


def fixture(case: str) -> dict:
    with np.load(FIXTURES / f"{case}.npz", allow_pickle=False) as npz:
        return {"maps": torch.from_numpy(npz["maps"]), "text_features": torch.from_numpy(npz["text_features"]),
                "provenance": json.loads(str(npz["provenance"]))}


def eclip_raw(case: str) -> torch.Tensor:
    """eclip's raw grid maps (B, K, h, w) for `case`, from the fixture's text embeddings."""
    name, options, arch = CASES[case]
    images = preprocess(pixels(arch))
    return get_method(name, **options).explain(adapter(arch), images, fixture(case)["text_features"]).raw


def max_difference(case: str, raw: torch.Tensor | None = None) -> float:
    """max |eclip - reference| over the min-max normalised grid maps of `case`."""
    ours, theirs = minmax_normalise(eclip_raw(case) if raw is None else raw), fixture(case)["maps"]
    assert ours.shape == theirs.shape, f"{case}: eclip {tuple(ours.shape)} vs reference {tuple(theirs.shape)}"
    return float((ours - theirs).abs().max())


pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_case_has_a_fixture_and_every_reference_method_a_case():
    assert sorted(p.stem for p in FIXTURES.glob("*.npz") if not p.stem.startswith("inputs-")) == sorted(CASES)
    covered = {name for name, _, _ in CASES.values()}
    assert covered == {"surgery", "gem", "legrad", "chefer", "grad_eclip", "sclip", "naclip", "clearclip", "maskclip"}


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_text_tower_matches_the_references(arch):
    """eclip encodes the texts as the references' own text towers did (the maps are then fed their embeddings)."""
    ours = adapter(arch).encode_text(golden.TEXTS)
    for case in (c for c, (_, _, a) in CASES.items() if a == arch):
        theirs = fixture(case)["text_features"]
        assert torch.allclose(ours[: len(theirs)], theirs, atol=1e-5), case


@pytest.mark.parametrize("case", list(CASES))
def test_maps_match_the_authors_code(case):
    raw = eclip_raw(case)
    spread = (raw.flatten(2).max(-1).values - raw.flatten(2).min(-1).values).min()
    assert spread > 1e-2 * raw.abs().max(), f"{case}: nearly constant maps; normalising them would amplify rounding"
    difference = max_difference(case, raw)
    assert difference < TOLERANCE, f"{case}: max |eclip - reference| = {difference:.2e} ({fixture(case)['provenance']})"


def test_the_golden_maps_are_not_trivial():
    """A fixture of constant or identical maps would let a wrong method pass."""
    for case in CASES:
        maps = fixture(case)["maps"]
        assert maps.flatten(2).std(-1).min() > 0.05, case
        if maps.shape[1] > 1:
            assert (maps[:, 0] - maps[:, 1]).abs().max() > 0.05, case


if __name__ == "__main__":  # pragma: no cover - the README's fidelity table
    torch.set_num_threads(1)
    for case in CASES:
        print(f"{case:24s} {max_difference(case):.1e}  {fixture(case)['provenance']['repository']}")
