"""Phrase localisation (Li et al. 2022): the authors' code on the same weights, the stride-free ResNet, the pixel scores.

`fixtures/phrase_vit_reference.npz` holds numbers only, made by running the authors' public
`SLICViT` (`models/slic_vit.py` with their `CLIPMaskedSpatialViT`, OpenAI's CLIP model code and
scikit-image's SLIC) with their ViT-B/16 Flickr30k settings on a tiny seeded 224 px ViT (patch 16,
width 64, 2 blocks; float16-rounded weights stored alongside), in float32 on the CPU (their
`.cuda()` calls made no-ops, NumPy's removed `np.bool` aliased to `bool`): the image, the text
embedding and their normalised heat map (float32) as published, where the upsampled position
embedding is stored as float16, and with that cast left out (`provenance` says which commits).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_adapter, random_images

from eclip.methods.base import get_method
from eclip.methods.phrase import region_tokens, softmax_temperature_mean

TEXTS = ["a red star", "a blue circle"]
FIXTURE = Path(__file__).parent / "fixtures" / "phrase_vit_reference.npz"


#: max |eclip - authors| of the normalised maps that still passes. The two references (float16 and
#: float32 position embedding) are 5.8e-5 apart on this model; eclip is within 3e-6 and 6e-6 of them.
TOLERANCE = 2e-5


@pytest.mark.parametrize("spec,reference,other", [("phrase", "heatmap", "heatmap_float32_positions"),
                                                  ("phrase:float16_positions=false", "heatmap_float32_positions", "heatmap")])
def test_vit_heat_map_equals_the_authors_code(spec, reference, other):
    """The default is the authors' code as published; `float16_positions=false` is it with the float16 cast left out."""
    pytest.importorskip("skimage")
    from open_clip.model import CLIP
    from PIL import Image

    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD

    data = np.load(FIXTURE)
    model = CLIP(embed_dim=32, vision_cfg=dict(image_size=224, patch_size=16, width=64, layers=2, head_width=64),
                 text_cfg=dict(context_length=16, vocab_size=49408, width=16, heads=2, layers=1), quick_gelu=True).eval()
    model.visual.load_state_dict({k.removeprefix("weight/"): torch.from_numpy(data[k].astype(np.float32))
                                  for k in data.files if k.startswith("weight/")})
    adapter = make_adapter("vit", model=model)
    adapter.mean, adapter.std, adapter.image_size = OPENAI_MEAN, OPENAI_STD, (224, 224)
    images = adapter.preprocess(Image.fromarray(data["image"]))
    maps = get_method(spec).explain(adapter, images, torch.from_numpy(data["text"]))
    expected = torch.from_numpy(data[reference])
    assert maps.scores.shape == (1, 1, 224, 224)
    assert (maps.scores[0, 0] - expected).abs().max() < TOLERANCE
    assert (expected - torch.from_numpy(data[other])).abs().max() > 2 * TOLERANCE, "the test tells the two embeddings apart"
    assert expected.std() > 0.05


def test_dilated_resnet_equals_the_strided_one_on_its_grid():
    """A trous: every 32nd pixel of the stride-free features is exactly the original network's feature."""
    adapter = make_adapter("resnet")
    images = random_images(adapter, seed=3)
    with torch.no_grad():
        dense, strided = adapter.dilated_features(images), adapter.features(images)
    assert dense.shape[-1] == images.shape[-1] - 30
    assert torch.allclose(dense[..., ::32, ::32], strided, atol=1e-5, rtol=1e-5)


def test_resnet_map_is_exp_cosine_of_the_value_path_at_every_pixel():
    adapter = make_adapter("resnet")
    images = random_images(adapter)
    pool = adapter.model.visual.attnpool
    pad = round(64 * 96 / 224)
    with torch.no_grad():
        feats = adapter.dilated_features(F.pad(images, (pad,) * 4))
        top = (feats.shape[-1] - 96) // 2
        x = feats[..., top : top + 96, top : top + 96].permute(0, 2, 3, 1)
        dense = F.normalize(pool.c_proj(pool.v_proj(x)), dim=-1)
    cosine = torch.einsum("bhwd,kd->bkhw", dense, adapter.encode_text(TEXTS))
    got = get_method("phrase").explain(adapter, images, TEXTS).raw
    ratio = got / torch.exp(cosine / 0.03)  # the map is exp(cos / T) up to one factor per map
    assert torch.allclose(ratio, ratio.flatten(2)[..., :1, None].expand_as(ratio), rtol=1e-4)


def test_pixel_score_is_the_mean_over_its_regions():
    scores = torch.tensor([[0.1, 0.3], [0.2, 0.0]])  # 2 regions x 2 texts
    members = torch.tensor([[True, True, False], [False, True, True]])  # 3 pixels
    got = softmax_temperature_mean(scores, members, temperature=0.1)
    e = torch.exp(scores / 0.1)
    expected = torch.stack([e[0], (e[0] + e[1]) / 2, e[1]], dim=1)  # (K, P)
    ratio = got / expected
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))


def test_a_region_token_covering_everything_is_the_class_token_without_itself():
    """One region = the whole image, stride unchanged: the token sees every patch (and itself instead of the class token).

    The paper pads the patch convolution by (patch - 1) // 2 whatever the stride; the grid stays 4 x 4 here.
    """
    adapter = make_adapter("vit")
    images = random_images(adapter, batch=1)
    visual = adapter.model.visual
    patches = F.conv2d(images, visual.conv1.weight, stride=8, padding=3).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.view(1, 1, -1)
    x = visual.ln_pre(torch.cat([cls, patches], dim=1) + visual.positional_embedding)
    token = x[:, :1]
    for block in visual.transformer.resblocks:
        c = x.shape[-1]
        heads = block.attn.num_heads
        src = block.ln_1(torch.cat([x[:, 1:], token], dim=1))
        q, k, v = F.linear(src, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
        split = [z.reshape(1, -1, heads, c // heads).transpose(1, 2) for z in (q, k, v)]
        attn = torch.softmax(split[0][:, :, -1:] @ split[1].transpose(-2, -1) / (c // heads) ** 0.5, dim=-1)
        token = token + block.attn.out_proj((attn @ split[2]).transpose(1, 2).reshape(1, 1, c))
        token = token + block.mlp(block.ln_2(token))
        x = block(x)
    expected = visual.ln_post(token[:, 0]) @ visual.proj
    whole = torch.ones(1, 32, 32, dtype=torch.bool)
    assert torch.allclose(region_tokens(adapter, images, whole, upsample=1, float16_positions=False), expected, atol=1e-5)
    rounded = region_tokens(adapter, images, whole, upsample=1)  # the authors' float16 position embedding
    assert not torch.allclose(rounded, expected, atol=1e-5)


def test_float16_positions_round_the_upsampled_embedding_only():
    """The authors' `upsample_pos_emb`: bilinear on the patch grid, class token kept, then stored as float16."""
    from eclip.methods.phrase import upsampled_positions

    adapter = make_adapter("vit")
    pos = adapter.pos_embedding.detach()  # (1 + 4 * 4, C)
    grid = F.interpolate(pos[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2), size=(8, 8), mode="bilinear", align_corners=False)
    exact = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(64, -1)])
    assert torch.equal(upsampled_positions(pos, (8, 8), float16=False), exact)
    rounded = upsampled_positions(pos, (8, 8))
    assert rounded.dtype == pos.dtype and torch.equal(rounded, exact.half().float())
    assert not torch.equal(rounded, exact)


def test_vit_regions_scale_with_the_image_and_maps_cover_it():
    pytest.importorskip("skimage")
    method = get_method("phrase")
    assert method.segment_counts((224, 224)) == tuple(range(100, 601, 50))
    assert method.segment_counts((112, 112))[0] == 25
    adapter = make_adapter("vit")
    maps = method.explain(adapter, random_images(adapter), TEXTS)
    assert maps.raw.shape == (2, 2, 32, 32) and (maps.raw > 0).all()
