"""The DenseCLIP adapters agree with the libraries' own outputs and never change the model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import make_adapter, make_open_clip, random_images

from eclip.errors import TextInputError


def test_encode_image_is_the_models_own(adapter):
    images = random_images(adapter)
    with torch.no_grad():
        own = adapter.model.encode_image(images)
    assert torch.allclose(adapter.encode_image(images), own, atol=1e-6)


def test_pooled_from_the_dense_path_equals_encode_image(adapter):
    """ViT: the class-token position through the dense path; ResNet: the mean-token query.

    This fails if the dense path misses the final norm, the projection, the position embedding
    or uses the wrong attention, because the pooled output would then differ too.
    """
    images = random_images(adapter)
    with torch.no_grad():
        pooled, dense = adapter.pooled_and_dense(images)
    assert torch.allclose(pooled, adapter.encode_image(images), atol=1e-5, rtol=1e-4)
    h, w = adapter.grid_size(*images.shape[-2:])
    assert dense.shape == (2, h, w, adapter.encode_image(images).shape[-1])


def test_dense_differs_from_pooled(adapter):
    """Dense features are per location, not copies of the pooled vector."""
    with torch.no_grad():
        pooled, dense = adapter.pooled_and_dense(random_images(adapter))
    assert (dense - pooled[:, None, None]).abs().max() > 1e-3
    assert dense.flatten(1, 2).std(dim=1).mean() > 1e-4


def test_explaining_does_not_change_the_model(adapter):
    images = random_images(adapter)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    out_before = adapter.encode_image(images)
    from eclip.methods.base import get_method

    get_method("itsm").explain(adapter, images, ["a red star", "a blue circle"])
    adapter.dense(random_images(adapter, size=(adapter.image_size[0] + 64, adapter.image_size[1])))
    after = adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(adapter.encode_image(images), out_before)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_non_square_inputs(arch):
    adapter = make_adapter(arch)
    h0, w0 = adapter.image_size
    images = random_images(adapter, size=(h0, 2 * w0))
    with torch.no_grad():
        dense = adapter.dense(images)
    assert dense.shape[1:3] == adapter.grid_size(h0, 2 * w0)
    assert dense.shape[2] == 2 * dense.shape[1]
    assert torch.isfinite(dense).all()


def test_vit_at_training_size_matches_open_clip_tokens(vit_adapter):
    """At the training size the patch tokens equal open_clip's own forward (no interpolation)."""
    images = random_images(vit_adapter)
    visual = vit_adapter.model.visual
    visual.output_tokens = True
    try:
        with torch.no_grad():
            _, tokens = visual(images)
    finally:
        visual.output_tokens = False
    with torch.no_grad():
        dense = vit_adapter.dense(images)
    assert torch.allclose(dense.flatten(1, 2), tokens @ visual.proj, atol=1e-5)


def test_text_encoding_matches_open_clip_and_is_normalised(adapter):
    texts = ["a red star", "a blue circle on a striped background"]
    emb = adapter.encode_text(texts)
    with torch.no_grad():
        own = F.normalize(adapter.model.encode_text(adapter.tokenizer(texts)), dim=-1)
    assert torch.allclose(emb, own, atol=1e-6)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("bad", ["", "   ", "word " * 40])
def test_bad_texts_are_clear_errors(vit_adapter, bad):
    with pytest.raises(TextInputError):
        vit_adapter.encode_text([bad])


def test_hf_twin_gives_the_same_maps():
    """The same weights in HF CLIPModel and open_clip give the same embeddings and dense features."""
    pytest.importorskip("transformers")
    from eclip.models.hf_convert import open_clip_to_hf

    oc = make_open_clip("vit")
    hf_adapter = make_adapter("vit", model=open_clip_to_hf(oc))
    oc_adapter = make_adapter("vit", model=oc)
    assert hf_adapter.arch == "vit" and type(hf_adapter).__name__ == "HFCLIPViT"
    for size in [(32, 32), (32, 48)]:
        images = random_images(oc_adapter, size=size)
        with torch.no_grad():
            p1, d1 = oc_adapter.pooled_and_dense(images)
            p2, d2 = hf_adapter.pooled_and_dense(images)
        assert torch.allclose(d1, d2, atol=1e-5)
        assert torch.allclose(p1, p2, atol=1e-5)
    images = random_images(oc_adapter)
    assert torch.allclose(hf_adapter.encode_image(images), oc_adapter.encode_image(images), atol=1e-5)
    texts = ["a red star", "two shapes"]
    assert torch.allclose(hf_adapter.encode_text(texts), oc_adapter.encode_text(texts), atol=1e-5)


def test_attention_records_are_probabilities(vit_adapter):
    images = random_images(vit_adapter)
    with torch.no_grad():
        x_plain, _ = vit_adapter.final_tokens(images)
        x_rec, records = vit_adapter.final_tokens(images, record=True)
    assert len(records) == vit_adapter.num_layers
    assert torch.allclose(x_plain, x_rec, atol=1e-5)
    attn = records[-1].attn
    assert torch.allclose(attn.sum(-1), torch.ones_like(attn.sum(-1)), atol=1e-5)


def test_public_members_are_the_wrapped_models_own():
    """What phrase localisation and interactions read: the class token, the position embedding, the pre-norm and the
    unnormalised text forward, the same from open_clip and from its Hugging Face twin."""
    pytest.importorskip("transformers")
    from eclip.models.hf_convert import open_clip_to_hf

    oc = make_open_clip("vit")
    ocd, hf = make_adapter("vit", model=oc), make_adapter("vit", model=open_clip_to_hf(oc))
    assert ocd.pos_embedding is oc.visual.positional_embedding and ocd.class_embedding is oc.visual.class_embedding
    x = torch.randn(2, 5, ocd.pos_embedding.shape[-1])
    for adapter in (ocd, hf):
        assert torch.allclose(adapter.pos_embedding, oc.visual.positional_embedding)
        assert torch.allclose(adapter.class_embedding, oc.visual.class_embedding)
        assert torch.allclose(adapter.ln_pre(x), oc.visual.ln_pre(x), atol=1e-6)
    tokens = ocd.tokenize(["a red star", "two shapes"])
    with torch.no_grad():
        own = oc.encode_text(tokens)
        assert torch.allclose(ocd.encode_tokens(tokens), own, atol=1e-6)
        assert torch.allclose(hf.encode_tokens(tokens), own, atol=1e-5)
    assert torch.allclose(F.normalize(own, dim=-1), ocd.encode_text(["a red star", "two shapes"]), atol=1e-6)
