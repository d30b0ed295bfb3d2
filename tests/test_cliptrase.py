"""CLIPtrase: by-hand formulas, the torch DBSCAN / median filter, and the authors' code on the same weights.

`fixtures/cliptrase_reference.npz` holds numbers only, made by running the authors' public script
(`clip_self_correlation.py` with their `clip_utils` ViT, scikit-learn's DBSCAN and SciPy's median
filter) on a tiny seeded 12-block ViT whose float16-rounded weights are stored alongside: its grid
logits, the recalibrated correlation rows it clustered, DBSCAN's labels, and its final
segmentation (each cluster relabelled by majority vote).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_adapter, random_images

from eclip.methods.base import get_method
from eclip.methods.cliptrase import cluster_assignment, cluster_means, default_dbscan
from eclip.methods.clustering import dbscan, median_filter, symmetric_pad

FIXTURE = Path(__file__).parent / "fixtures" / "cliptrase_reference.npz"
TEXTS = ["a red star", "a blue circle", "two shapes on stripes"]


@pytest.fixture(scope="module")
def reference():
    """The reference numbers and our adapter around the very same weights."""
    from open_clip.model import CLIP
    from PIL import Image

    from eclip.models.adapter import OPENAI_MEAN, OPENAI_STD

    data = dict(np.load(FIXTURE))
    model = CLIP(embed_dim=16, vision_cfg=dict(image_size=128, patch_size=16, width=16, layers=12, head_width=8),
                 text_cfg=dict(context_length=16, vocab_size=49408, width=16, heads=2, layers=1), quick_gelu=True).eval()
    weights = {k.removeprefix("weight/"): torch.from_numpy(v.astype(np.float32)) for k, v in data.items() if k.startswith("weight/")}
    model.visual.load_state_dict(weights)
    adapter = make_adapter("vit", model=model)
    adapter.mean, adapter.std, adapter.image_size = OPENAI_MEAN, OPENAI_STD, (128, 128)
    images = adapter.preprocess(Image.fromarray(data["image"]))
    return data, adapter, images, torch.from_numpy(data["text"])


def test_features_and_correlation_equal_the_authors(reference):
    data, adapter, images, text = reference
    method = get_method("cliptrase", cluster=False)
    dense, correlation = method.features(adapter, images)
    ours = torch.einsum("bhwd,kd->bkhw", F.normalize(dense, dim=-1), text)[0]
    assert torch.allclose(ours, torch.from_numpy(data["patch_logits"]), atol=1e-5)
    assert torch.allclose(correlation[0], torch.from_numpy(data["correlation"]), atol=1e-5)
    assert torch.allclose(method.explain(adapter, images, text).raw[0], ours)


def test_dbscan_equals_scikit_learn_on_the_authors_rows(reference):
    data = reference[0]
    labels = dbscan(torch.from_numpy(data["correlation"]), float(data["eps"]), int(data["min_samples"]))
    assert np.array_equal(labels.numpy(), data["dbscan_labels"])
    assert (labels == -1).any() and labels.max() >= 2, "the fixture exercises noise and several clusters"


def test_clusters_reproduce_the_authors_segmentation(reference):
    """Our cluster assignment + the authors' majority vote = their final segmentation, pixel for pixel."""
    data, adapter, images, text = reference
    _, correlation = get_method("cliptrase").features(adapter, images)
    assignment = cluster_assignment(correlation[0], (8, 8), (128, 128), float(data["eps"]), int(data["min_samples"]))
    logits = F.interpolate(torch.from_numpy(data["patch_logits"])[None], size=(128, 128), mode="bilinear",
                           align_corners=False)[0]
    preds = logits.argmax(dim=0)
    for c in assignment.unique():
        inside = assignment == c
        preds[inside] = torch.mode(preds[inside]).values  # the authors' vote (ties cannot occur here)
    assert np.array_equal(preds.numpy(), data["vote"])


def test_clustered_maps_are_cluster_means_of_the_authors_logits(reference):
    data, adapter, images, text = reference
    method = get_method("cliptrase", eps=float(data["eps"]), min_samples=int(data["min_samples"]))
    got = method.explain(adapter, images, text).raw[0]
    _, correlation = method.features(adapter, images)
    assignment = cluster_assignment(correlation[0], (8, 8), (128, 128), float(data["eps"]), int(data["min_samples"]))
    logits = F.interpolate(torch.from_numpy(data["patch_logits"])[None], size=(128, 128), mode="bilinear",
                           align_corners=False)[0]
    for c in assignment.unique():
        inside = assignment == c
        expected = logits[:, inside].mean(dim=1)
        assert torch.allclose(got[:, inside], expected[:, None].expand(-1, int(inside.sum())), atol=1e-5)
    assert len(assignment.unique()) >= 3


# ------------------------------------------------------------------ building blocks by hand
def test_last_block_self_correlation_by_hand():
    adapter = make_adapter("vit")
    visual = adapter.model.visual
    images = random_images(adapter)
    x = adapter.embed(images)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    last = visual.transformer.resblocks[-1]
    q, k, v = F.linear(last.ln_1(x), last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, dim=-1)
    heads = last.attn.num_heads
    split = [z.reshape(2, -1, heads, z.shape[-1] // heads).transpose(1, 2) for z in (q, k, v)]
    attn = sum(torch.softmax(z @ z.transpose(-2, -1) / z.shape[-1] ** 0.5, dim=-1) for z in split)
    y = x + last.attn.out_proj((attn @ split[2]).transpose(1, 2).reshape(x.shape))
    y = y + last.mlp(last.ln_2(y))
    dense = visual.ln_post(y[:, 1:]) @ visual.proj
    t = adapter.encode_text(TEXTS)
    expected = (F.normalize(dense, dim=-1) @ t.T).transpose(1, 2).reshape(2, 3, 4, 4)
    got = get_method("cliptrase", cluster=False).explain(adapter, images, TEXTS).raw
    assert torch.allclose(got, expected, atol=1e-5)


def test_dbscan_small_cases_by_hand():
    # two tight groups, one point between them within eps of one core point only, one far outlier
    points = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [0.6], [20.0]])
    labels = dbscan(points, eps=0.45, min_samples=3)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 0, -1]
    # a border point reachable from two clusters joins the one numbered first
    points = torch.tensor([[1.35], [1.4], [1.45], [1.5], [0.0], [0.05], [0.1], [0.15], [0.75]])
    assert dbscan(points, eps=0.62, min_samples=4).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0]
    assert dbscan(points, eps=0.01, min_samples=2).tolist() == [-1] * 9


def test_median_filter_mirrors_the_edge_pixel():
    x = torch.arange(5.0)[None, None].expand(1, 3, 5).contiguous()
    assert symmetric_pad(x, 2)[0, 0].tolist() == [1, 0, 0, 1, 2, 3, 4, 4, 3]
    spike = torch.zeros(1, 7, 7)
    spike[0, 3, 3] = 9.0
    assert median_filter(spike, 3).abs().sum() == 0, "an isolated spike is removed"
    ramp = torch.arange(49.0).reshape(1, 7, 7)
    smoothed = median_filter(ramp, 3)[0]
    assert torch.equal(smoothed[1:-1, 1:-1], ramp[0, 1:-1, 1:-1]), "a linear ramp is kept inside"
    # corners as scipy.ndimage.median_filter(np.arange(49.).reshape(7, 7), 3) gives them
    assert smoothed[0].tolist() == [1, 2, 3, 4, 5, 6, 6] and smoothed[6].tolist() == [42, 42, 43, 44, 45, 46, 47]


def test_cluster_means_and_defaults():
    maps = torch.arange(8.0).reshape(2, 2, 2)
    assignment = torch.tensor([[0, 1], [1, 1]])
    out = cluster_means(maps, assignment)
    assert out[0].tolist() == [[0.0, 2.0], [2.0, 2.0]] and out[1].tolist() == [[4.0, 6.0], [6.0, 6.0]]
    assert default_dbscan(14 * 14) == (0.7, 3) and default_dbscan(21 * 21) == (1.1, 7)


def test_no_cluster_leaves_the_maps_upsampled():
    adapter = make_adapter("vit")
    images = random_images(adapter)
    plain = get_method("cliptrase", cluster=False).explain(adapter, images, TEXTS).raw
    none_found = get_method("cliptrase", eps=1e-9, min_samples=99).explain(adapter, images, TEXTS).raw
    assert torch.allclose(none_found, F.interpolate(plain, size=images.shape[-2:], mode="bilinear", align_corners=False))
