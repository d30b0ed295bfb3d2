"""Second-order interactions: the authors' code on the same weights, word grouping, and the explain outputs.

`fixtures/interactions_reference.npz` holds numbers only, made by running the authors'
`exclip.OpenClipExplainer.explain` (N = 10, the last block of each tower) on a tiny seeded open_clip
ViT whose weights are stored alongside (the token embedding only for the ids the caption uses).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TEXT_CFG, VIT_CFG, make_adapter, random_images

from eclip.errors import MethodError
from eclip.methods.base import get_method
from eclip.methods.interactions import Word, interactions, steps_alphas

FIXTURE = Path(__file__).parent / "fixtures" / "interactions_reference.npz"


@pytest.fixture(scope="module")
def reference():
    from open_clip.model import CLIP

    data = np.load(FIXTURE)
    model = CLIP(embed_dim=24, vision_cfg=dict(VIT_CFG), text_cfg=dict(TEXT_CFG)).eval()
    state = {k.removeprefix("weight/"): torch.from_numpy(data[k]) for k in data.files if k.startswith("weight/")}
    embedding = torch.zeros_like(model.token_embedding.weight)
    embedding[torch.from_numpy(data["token_ids"])] = torch.from_numpy(data["token_rows"])
    model.load_state_dict({**state, "token_embedding.weight": embedding})
    return data, make_adapter("vit", model=model)


def test_equals_the_authors_code_on_the_same_weights(reference):
    data, adapter = reference
    caption = str(data["caption"])
    (result,) = interactions(adapter, torch.from_numpy(data["image"]), [caption])
    assert result.tokens.tolist() == data["tokens"][0, : len(result.tokens)].tolist()
    expected = torch.from_numpy(data["interactions"])
    assert result.matrix.shape == (1, *expected.shape)
    assert torch.allclose(result.matrix[0], expected, atol=1e-6, rtol=1e-4)
    assert expected.abs().max() > 1e-3, "the reference is not trivially zero"


def test_words_and_their_maps(reference):
    data, adapter = reference
    (result,) = interactions(adapter, torch.from_numpy(data["image"]), ["a red star next to a blue circle."])
    assert [w.text for w in result.words] == ["a", "red", "star", "next", "to", "a", "blue", "circle."]
    assert result.words[-1].tokens == slice(8, 10), "'circle.' is two tokens"
    names, maps = result.word_maps()
    assert names == ["red", "star", "blue", "circle."]
    assert torch.allclose(maps[:, 3], result.matrix[:, 8:10].sum(1))
    assert torch.allclose(result.text_map(), maps.sum(1))
    assert not Word("next", slice(0, 1)).content and not Word(",", slice(0, 1)).content and Word("Star,", slice(0, 1)).content


def test_alphas_are_the_authors_right_endpoints():
    assert torch.allclose(steps_alphas(4), torch.tensor([1.0, 0.75, 0.5, 0.25]))


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_integrated_jacobians_are_complete_in_the_limit(arch):
    """Summed over positions, each side's integrated Jacobian tends to e(x) - e(r): the image's to
    e_I(image) - e_I(zeros), the caption's to e_T(caption) - e_T(reference state at the last block, pooled at
    the caption's EOS position, as the authors pool every interpolation). So the interactions add up to
    the second-order part of e_T . e_I. (The tiny ResNet's attention pool is nearly an argmax: many steps.)"""
    from eclip.methods.interactions import hooked_input, image_states, integrated_jacobian, reference_tokens, text_jacobian

    adapter = make_adapter(arch, seed=2)
    images = random_images(adapter, batch=1, seed=4)
    text = "a red star"
    block = adapter.text_blocks[-1]
    with torch.no_grad():
        toks = adapter.tokenize([text])
        states = {}
        with hooked_input(block, lambda h: states.setdefault("ref", h)):
            adapter.encode_tokens(reference_tokens(adapter, toks.shape[1])[None])
        with hooked_input(block, lambda h: states["ref"]):
            e_rt = adapter.encode_tokens(toks)[0]
        text_diff = adapter.encode_tokens(toks)[0] - e_rt
        image_diff = adapter.encode_image(images)[0] - adapter.encode_image(torch.zeros_like(images))[0]
    image_errors, text_errors = [], []
    with torch.enable_grad():
        tokens_states, tail, positions = image_states(adapter, images)
        for steps in (4, 400):
            side, _ = integrated_jacobian(tail, tokens_states[0], tokens_states[-1], steps, positions, chunk=32)
            image_errors.append(float((side.flatten(1).sum(1) - image_diff).norm() / image_diff.norm()))
        for steps in (4, 100):
            jac, _, _ = text_jacobian(adapter, text, steps, len(adapter.text_blocks) - 1, chunk=32)
            text_errors.append(float((jac.sum(1) - text_diff).norm() / text_diff.norm()))
    assert image_errors[1] < image_errors[0] and image_errors[1] < 0.01
    assert text_errors[1] < text_errors[0] and text_errors[1] < 0.01


def test_method_maps_follow_the_cached_texts_and_refuse_ensembles(reference):
    from eclip.prompts import encode_prompts

    _, adapter = reference
    images = random_images(adapter)
    method = get_method("interactions", steps=2)
    single = encode_prompts(adapter, ["star", "circle"], "a photo of a {}.")
    prompted = method.explain(adapter, images, single, text_labels=["star", "circle"])
    assert prompted.raw.shape == (2, 2, 4, 4) and torch.isfinite(prompted.raw).all()
    direct = get_method("interactions", steps=2).explain(adapter, images, ["a photo of a star.", "a photo of a circle."])
    assert torch.allclose(prompted.raw, direct.raw, atol=1e-6)
    with pytest.raises(MethodError, match="prompt ensemble"):
        method.explain(adapter, images, encode_prompts(adapter, ["star"], "seven"), text_labels=["star"])


def test_the_token_interactions_travel_with_the_maps_one_per_image(reference):
    """`Maps.extra["interactions"]`: per image, every caption's matrix, words and tokens; the method keeps nothing."""
    _, adapter = reference
    images = random_images(adapter, seed=3)
    captions = ["a red star next to a blue circle.", "stripes"]
    method = get_method("interactions", steps=2)
    maps = method.explain(adapter, images, captions)
    direct = interactions(adapter, images, captions, steps=2)
    assert [type(e).__name__ for e in maps.extra["interactions"]] == ["ImageInteractions"] * 2
    longest, short = len(direct[0].tokens), len(direct[1].tokens)
    assert longest == 11 and short < longest  # BOS, 9 tokens ("circle." is two), EOS; "stripes" is padded
    for b, extra in enumerate(maps.extra["interactions"]):
        array = extra.array()
        assert array.shape == (2, longest, 4, 4) and array.dtype == np.float32
        assert torch.allclose(torch.from_numpy(array[0]), direct[0].matrix[b], atol=1e-6)
        assert torch.allclose(torch.from_numpy(array[1, :short]), direct[1].matrix[b], atol=1e-6) and not array[1, short:].any()
        record = extra.record()
        assert [w["word"] for w in record[captions[0]]["words"]] == ["red", "star", "blue", "circle."]
        assert record[captions[0]]["tokens"] == direct[0].tokens.tolist()
        titles, panels = extra.panels()
        assert titles[0] == f"red\n({captions[0]})" and len(titles) == len(panels) == 5
        assert torch.allclose(panels[0], direct[0].matrix[b, 2], atol=1e-6)  # "red" is token 2
        assert torch.allclose(maps.raw[b, 0], direct[0].text_map()[b], atol=1e-6)
    assert not hasattr(method, "last")


def test_explain_cli_writes_one_panel_per_content_word_and_the_matrix(tmp_path):
    from helpers import tiny_model
    from PIL import Image
    from typer.testing import CliRunner

    import eclip.cli as cli

    folder = tiny_model(tmp_path, "vit")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["explain", str(tmp_path / "scene.png"), "--text", "a red star next to a blue circle",
                                          "--method", "interactions", "--model", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "scene.json").read_text())
    words = record["interactions"]["a red star next to a blue circle"]["words"]
    assert [w["word"] for w in words] == ["red", "star", "blue", "circle"]
    matrix = np.load(out / "scene_interactions.npy")
    assert matrix.shape == (1, 10, 4, 4) and matrix.dtype == np.float32  # (texts, BOS + 8 words + EOS, h, w)
    assert np.load(out / "scene.npy").shape == (1, 40, 60)
    assert Image.open(out / "scene.png").size[0] > 4 * 150, "image + 4 word panels"
