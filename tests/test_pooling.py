"""Pooling heads agree with the ITSM's dense map, masks follow their rules, loading restores the head."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import TEXT_CFG, VIT_CFG, make_adapter, make_open_clip, random_images

from eclip.errors import MethodError, RecipeError
from eclip.methods.base import get_method
from eclip.models.free_attention import attention_weights, foreground_mask, mass_mask, topk_mask
from eclip.models.pooling import PoolingConfig, max_pool

TEXTS = ["a red star", "a blue circle"]


def _head(adapter, head: str, **kw):
    adapter.pooling = PoolingConfig(head=head, **kw)
    return adapter


def test_avg_logit_is_the_mean_of_the_unnormalised_map(adapter):
    images = random_images(adapter)
    text = adapter.encode_text(TEXTS)
    dense = adapter.dense(images).detach()
    dot_map = torch.einsum("bhwd,kd->bkhw", dense, text)  # ITSM before the per-location normalisation
    pooled = _head(adapter, "avg").encode_image(images)
    logit = F.normalize(pooled, dim=-1) @ text.T
    assert torch.allclose(logit * pooled.norm(dim=-1, keepdim=True), dot_map.mean(dim=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("max_over", ["raw", "normalized"])
def test_max_logit_is_the_channelwise_max_of_the_dense_map(adapter, max_over):
    images = random_images(adapter)
    text = adapter.encode_text(TEXTS)
    dense = adapter.dense(images).detach()
    if max_over == "normalized":
        dense = F.normalize(dense, dim=-1)
    by_hand = dense.flatten(1, 2).max(dim=1).values
    pooled = _head(adapter, "max", max_over=max_over).encode_image(images)
    assert torch.allclose(pooled, by_hand, atol=1e-6)
    # each channel of the pooled vector is the value of one real location
    hits = (dense.flatten(1, 2) == pooled[:, None]).any(dim=1)
    assert hits.all()
    logit = F.normalize(pooled, dim=-1) @ text.T
    assert torch.allclose(logit, F.normalize(by_hand, dim=-1) @ text.T, atol=1e-6)


def test_pooled_and_dense_follow_the_head_and_original_is_untouched(adapter):
    images = random_images(adapter)
    with torch.no_grad():
        own = adapter.model.encode_image(images)
        assert torch.allclose(_head(adapter, "attention").encode_image(images), own, atol=1e-6)
        pooled, dense = _head(adapter, "masked_max").pooled_and_dense(images)
    assert torch.allclose(pooled, dense.flatten(1, 2).amax(dim=1))
    assert not torch.allclose(pooled, own, atol=1e-3)
    assert torch.allclose(adapter.model.encode_image(images), own)  # the wrapped model is unchanged


def test_masked_max_with_all_true_is_max_and_one_location_is_that_feature():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(2, 3, 4, 5, generator=g)
    assert torch.equal(max_pool(dense, torch.ones(2, 3, 4, dtype=torch.bool)), max_pool(dense))
    one = torch.zeros(2, 3, 4, dtype=torch.bool)
    one[0, 1, 2] = True
    one[1, 2, 0] = True
    out = max_pool(dense, one)
    assert torch.equal(out[0], dense[0, 1, 2]) and torch.equal(out[1], dense[1, 2, 0])
    empty = torch.zeros(2, 3, 4, dtype=torch.bool)  # an empty mask falls back to every location
    assert torch.equal(max_pool(dense, empty), max_pool(dense))


def test_masked_max_gradient_reaches_only_masked_locations():
    dense = torch.randn(1, 2, 2, 3, requires_grad=True)
    mask = torch.tensor([[[True, False], [False, False]]])
    max_pool(dense, mask).sum().backward()
    assert dense.grad[0, 0, 0].abs().sum() > 0 and dense.grad[0].flatten(0, 1)[1:].abs().sum() == 0


def test_mass_and_topk_masks_on_hand_made_attention():
    weights = torch.tensor([[0.1, 0.5, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25]])
    assert mass_mask(weights, 0.6).tolist() == [[False, True, True, False], [True, True, True, False]]
    assert mass_mask(weights, 0.5).tolist()[0] == [False, True, False, False]
    assert mass_mask(weights, 1.0).all()
    assert mass_mask(weights * 7.0, 0.6).tolist()[0] == [False, True, True, False]  # unnormalised weights
    distinct = torch.tensor([[0.1, 0.5, 0.25, 0.15]])
    assert topk_mask(distinct, 0.5).tolist() == [[False, True, True, False]]
    assert topk_mask(distinct, 0.25).tolist() == [[False, True, False, False]]
    assert topk_mask(distinct, 0.01).sum() == 1 and topk_mask(distinct, 1.0).all()
    grid = weights.view(2, 2, 2)
    assert foreground_mask(grid, PoolingConfig(head="masked_max", mask_rule="topk", mask_topk=0.25)).sum() == 2
    assert foreground_mask(grid, PoolingConfig(head="masked_max", mask_source="none")).all()


def test_cls_attention_is_the_last_layer_class_token_row(adapter):
    images = random_images(adapter)
    weights = attention_weights(adapter, images, "cls_attention")
    h, w = adapter.grid_size(*images.shape[-2:])
    assert weights.shape == (2, h, w)
    assert torch.allclose(weights.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        if adapter.arch == "vit":
            attn = adapter.final_tokens(images, record=True)[1][-1].attn
        else:
            attn = adapter.attention_pool(adapter.features(images), return_attn=True)[1]
    row = attn[:, :, 0, 1:].mean(dim=1)
    assert torch.allclose(weights.flatten(1), row / row.sum(dim=1, keepdim=True), atol=1e-5)


def test_sources_and_the_free_attention_method(adapter):
    images = random_images(adapter)
    for source in ["similarity", "none"] + (["rollout"] if adapter.arch == "vit" else []):
        weights = attention_weights(adapter, images, source)
        assert (weights >= 0).all() and torch.allclose(weights.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    if adapter.arch == "resnet":
        with pytest.raises(MethodError, match="ViT"):
            attention_weights(adapter, images, "rollout")
    maps = get_method("free_attention").explain(adapter, images, TEXTS)
    assert maps.scores.shape == (2, 2, *images.shape[-2:])
    assert torch.equal(maps.raw[:, 0], maps.raw[:, 1])  # text-independent


def test_bad_pooling_values_are_clear():
    with pytest.raises(RecipeError, match="`pooling.head` 'median'"):
        PoolingConfig(head="median")
    with pytest.raises(RecipeError, match="`pooling.mask_mass` 1.5"):
        PoolingConfig(mask_mass=1.5)
    with pytest.raises(RecipeError, match="unknown keys"):
        PoolingConfig.from_json({"head": "max", "temperature": 1})


def test_loading_a_masked_max_folder_restores_the_head(tmp_path):
    from eclip.models.folder import save_model_folder
    from eclip.models.loading import load_model

    config = {
        "arch": "vit",
        "open_clip": {"embed_dim": 24, "vision_cfg": dict(VIT_CFG), "text_cfg": dict(TEXT_CFG)},
        "preprocess": {"image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    model = make_open_clip("vit")
    save_model_folder(tmp_path / "eclip", model, {**config, "pooling": PoolingConfig(head="masked_max", mask_mass=0.5).to_json()})
    save_model_folder(tmp_path / "plain", model, config)
    eclip_model, plain = load_model(str(tmp_path / "eclip")), load_model(str(tmp_path / "plain"))
    assert eclip_model.pooling.head == "masked_max" and eclip_model.pooling.mask_mass == 0.5
    images = random_images(make_adapter("vit"))
    with torch.no_grad():
        dense = eclip_model.dense(images)
        assert torch.allclose(eclip_model.encode_image(images), dense.flatten(1, 2).amax(dim=1), atol=1e-6)
        assert torch.allclose(eclip_model.pooled_and_dense(images)[0], dense.flatten(1, 2).amax(dim=1), atol=1e-6)
        assert torch.allclose(plain.encode_image(images), plain.model.encode_image(images), atol=1e-6)
