"""Text-based decomposition: the contributions add up to the model's embedding; the authors' normalisation by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TEXT_CFG, VIT_CFG, make_adapter, random_images

from eclip.errors import MethodError
from eclip.methods.base import get_method
from eclip.methods.decomposition import decompose
from eclip.models.pooling import PoolingConfig
from eclip.textspan import text_span

TEXTS = ["a red star", "a blue circle", "two shapes on stripes"]


@pytest.mark.parametrize("head", [None, "avg"])
def test_contributions_add_up_to_the_models_own_embedding(head):
    adapter = make_adapter("vit", seed=3)
    adapter.pooling = PoolingConfig(head=head) if head else None
    images = random_images(adapter, seed=5)
    parts = decompose(adapter, images)
    own = adapter.encode_image(images)
    assert torch.allclose(parts.total * parts.norm[:, None], own, atol=1e-5)
    assert torch.allclose(parts.norm, own.norm(dim=-1))
    text = adapter.encode_text(TEXTS)
    scores = parts.layer_scores(text)
    cosine = F.normalize(own, dim=-1) @ text.T
    total = scores["embed"] + scores["mlps"].sum(1) + scores["heads"].sum((1, 2))
    assert torch.allclose(total, cosine, atol=1e-5)


def test_max_pooling_is_refused():
    adapter = make_adapter("vit")
    assert get_method("decomposition").unsupported(adapter) is None
    adapter.pooling = PoolingConfig(head="max")
    assert "linear pooling" in get_method("decomposition").unsupported(adapter)
    with pytest.raises(MethodError, match="linear pooling"):
        get_method("decomposition").explain(adapter, random_images(adapter), TEXTS)


def test_one_layer_by_hand_as_the_authors_normalise():
    """prs_hook.py: component - mean / (N * T * H), times gamma over the std, plus beta / (N * T * H), projected, / |embedding|."""
    from open_clip.model import CLIP

    torch.manual_seed(3)
    model = CLIP(embed_dim=24, vision_cfg=dict(VIT_CFG, layers=1), text_cfg=dict(TEXT_CFG)).eval()
    adapter = make_adapter("vit", model=model)
    visual = model.visual
    block = visual.transformer.resblocks[0]
    images = random_images(adapter)
    x = adapter.embed(images)
    heads, c = block.attn.num_heads, x.shape[-1]
    d = c // heads
    q, k, v = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (z.reshape(2, -1, heads, d).transpose(1, 2) for z in (q, k, v))
    attn = torch.softmax(q @ k.transpose(-2, -1) / d**0.5, dim=-1)  # (B, H, T, T)
    w_o = block.attn.out_proj.weight.reshape(c, heads, d)
    tokens = x.shape[1]
    per = torch.einsum("bhm,bhmd,chd->bmhc", attn[:, :, 0], v, w_o) + block.attn.out_proj.bias / (tokens * heads)
    y = x + block.attn.out_proj((attn @ v).transpose(1, 2).reshape(x.shape))
    mlp = block.mlp(block.ln_2(y))
    final = (y + mlp)[:, 0]
    mean, std = final.mean(-1), (final.var(-1, unbiased=False) + visual.ln_post.eps).sqrt()
    n = 3  # embedding, one attention layer, one MLP
    g, b = visual.ln_post.weight, visual.ln_post.bias
    representation = visual.ln_post(final) @ visual.proj
    norm = representation.norm(dim=-1)

    def normalise(part, share):
        return ((g * (part - mean.view(-1, *[1] * (part.dim() - 1)) / share) / std.view(-1, *[1] * (part.dim() - 1))
                 + b / share) @ visual.proj) / norm.view(-1, *[1] * (part.dim() - 1))

    parts = decompose(adapter, images)
    assert torch.allclose(parts.heads[:, 0], normalise(per, n * tokens * heads), atol=1e-6)
    assert torch.allclose(parts.mlps[:, 0], normalise(mlp[:, 0], n), atol=1e-6)
    assert torch.allclose(parts.embed, normalise(x[:, 0], n), atol=1e-6)
    # the map: locations' contributions over all layers and heads, dotted with texts, minus the mean over texts
    t = adapter.encode_text(TEXTS)
    spatial = normalise(per, n * tokens * heads)[:, 1:].sum(2) @ t.T  # (B, hw, K)
    expected = (spatial - spatial.mean(-1, keepdim=True)).transpose(1, 2).reshape(2, 3, 4, 4)
    assert torch.allclose(get_method("decomposition").explain(adapter, images, TEXTS).raw, expected, atol=1e-6)


def test_layers_option_keeps_the_last_layers_only():
    adapter = make_adapter("vit")
    images = random_images(adapter)
    parts = decompose(adapter, images)
    t = adapter.encode_text(TEXTS)
    last = parts.heads[:, -1:, 1:].sum((1, 3)) @ t.T
    got = get_method("decomposition", layers=1, center=False).explain(adapter, images, TEXTS).raw
    assert torch.allclose(got, last.transpose(1, 2).reshape(2, 3, 4, 4), atol=1e-6)
    assert not torch.allclose(got, get_method("decomposition", center=False).explain(adapter, images, TEXTS).raw)
    one = get_method("decomposition").explain(adapter, images, TEXTS[:1]).raw
    assert one.flatten(2).std(-1).gt(0).all(), "a single text is not centred away to a constant"


def test_the_terms_travel_with_the_maps_one_per_image():
    """`Maps.extra["decomposition"]`: each image's cosines and their terms, which add up to them, whatever the options."""
    adapter = make_adapter("vit", seed=3)
    images = random_images(adapter, seed=5)
    maps = get_method("decomposition:layers=1").explain(adapter, images, TEXTS)
    parts = decompose(adapter, images)
    cosine = F.normalize(adapter.encode_image(images), dim=-1) @ adapter.encode_text(TEXTS).T
    assert len(maps.extra["decomposition"]) == 2
    for b, terms in enumerate(maps.extra["decomposition"]):
        total = terms.embed + terms.mlps.sum(0) + terms.heads.sum((0, 1))
        assert np.allclose(total, cosine[b].numpy(), atol=1e-5) and np.allclose(terms.cosine, cosine[b].numpy(), atol=1e-5)
        assert np.allclose(terms.spatial, parts.spatial(adapter.encode_text(TEXTS))[b].numpy(), atol=1e-6)  # all layers, uncentred
        record = terms.record()
        assert len(record["heads"]) == 3 and np.allclose(record["heads"][1], terms.heads[..., 1])
        assert record["mlps"][2] == pytest.approx(terms.mlps[:, 2].tolist())
        rows = terms.rows(TEXTS)
        assert sum(r["contribution"] for r in rows if r["text"] == TEXTS[0]) == pytest.approx(float(cosine[b, 0]), abs=1e-5)


def test_text_span_finds_the_directions_a_head_writes_in():
    """Outputs vary only along two of the pool's texts: those two are found first, and explain all the variance."""
    g = torch.Generator().manual_seed(0)
    pool = F.normalize(torch.randn(12, 16, generator=g), dim=-1)
    coeffs = torch.randn(200, 2, generator=g) * torch.tensor([3.0, 1.0])
    outputs = coeffs @ pool[[4, 9]] + 0.5  # plus a constant offset the mean removes
    chosen, explained = text_span(outputs, pool, n_texts=3, rank=16)
    assert chosen[:2] == [4, 9]
    assert explained[1] == pytest.approx(1.0, abs=1e-5) and explained[0] < explained[1]


# ------------------------------------------------------------------ eclip decompose / eclip textspan
@pytest.fixture
def tiny_folder(tmp_path):
    from helpers import tiny_model

    return tiny_model(tmp_path, "vit")


def test_decompose_cli_tables_add_up_to_the_cosine(tiny_folder, tmp_path):
    import csv

    from PIL import Image
    from typer.testing import CliRunner

    import eclip.cli as cli

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["decompose", str(tmp_path / "scene.png"), "--text", "a red star", "--text", "a blue circle",
                                          "--model", str(tiny_folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "scene_decomposition.csv").open()))
    assert len(rows) == 2 * (1 + 2 * (1 + 2))  # per text: embedding, 2 x (MLP + 2 heads)
    from eclip.models.loading import load_model

    adapter = load_model(str(tiny_folder))
    images = adapter.preprocess([Image.open(tmp_path / "scene.png")])
    cosine = F.normalize(adapter.encode_image(images), dim=-1) @ adapter.encode_text(["a red star"]).T
    total = sum(float(r["contribution"]) for r in rows if r["text"] == "a red star")
    assert total == pytest.approx(float(cosine), abs=1e-5)
    assert "head 1" in (out / "scene_decomposition.md").read_text()
    assert (out / "scene_decomposition.png").stat().st_size > 1000
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no temporary file is left"
    folder = tmp_path / "mixed"
    folder.mkdir()
    (tmp_path / "scene.png").rename(folder / "scene.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    mixed = CliRunner().invoke(cli.app, ["decompose", str(folder), "--text", "a red star", "--model", str(tiny_folder),
                                         "-o", str(tmp_path / "mixed_out"), "--batch-size", "2"])
    assert mixed.exit_code == 1 and "broken.png" in mixed.output
    assert sorted(p.name for p in (tmp_path / "mixed_out").iterdir()) == [f"scene_decomposition.{s}" for s in ("csv", "md", "png")]


def test_textspan_cli_and_resnet_refusal(tiny_folder, tmp_path):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    import eclip.cli as cli

    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "pool.txt").write_text("a red star\na blue circle\na green square\n\na yellow ring\n")
    out = tmp_path / "span"
    result = CliRunner().invoke(cli.app, ["textspan", str(tmp_path), "--pool", str(tmp_path / "pool.txt"), "--layers", "1",
                                          "--texts-per-head", "2", "--model", str(tiny_folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "textspan.json").read_text())
    assert record["images"] == 5 and record["pool"] == 4
    assert [(h["layer"], h["head"]) for h in record["heads"]] == [(1, 0), (1, 1)]
    assert all(len(h["texts"]) == 2 and h["explained"][0] <= h["explained"][1] <= 1 + 1e-9 for h in record["heads"])
    refused = CliRunner().invoke(cli.app, ["decompose", "--model", "synth-rn", "-o", str(tmp_path / "rn")])
    assert refused.exit_code != 0 and "ViT" in str(refused.exception)
