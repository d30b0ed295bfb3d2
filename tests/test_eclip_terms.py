"""The loss terms that are ours: the dense term, the phrase term, distillation and L2-SP each do what they claim, with any head."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_adapter, random_images, tiny_model

from eclip.data.synthetic import object_phrases
from eclip.errors import RecipeError
from eclip.models.loading import load_model
from eclip.models.pooling import PoolingConfig
from eclip.train import DataRecipe, FinetuneRecipe, LossTerms, Start, TrainSettings, build_run, finetune
from eclip.train.losses import dense_contrast_loss, distillation_loss, l2sp_loss, phrase_share_loss
from eclip.train.parts import make_embedder
from eclip.train.terms import DenseTerm, DistillTerm, L2SPTerm, PhraseTerm


def _grid(fg: list[list[int]]) -> torch.Tensor:
    return torch.tensor(fg, dtype=torch.bool)[None]


def test_the_margin_form_is_the_gap_between_foreground_and_background_means():
    text = torch.tensor([[1.0, 0.0]])
    # four locations: cosines 1, 0 (foreground) and 0, -1 (background): means 0.5 and -0.5, gap 1
    dense = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [-3.0, 0.0]]]])
    mask = _grid([[1, 1], [0, 0]])
    assert dense_contrast_loss(dense, mask, text, "margin", margin=1.5).item() == pytest.approx(0.5, abs=1e-6)
    assert dense_contrast_loss(dense, mask, text, "margin", margin=0.9).item() == 0.0
    # the other way round the gap is -1
    assert dense_contrast_loss(dense, ~mask, text, "margin", margin=0.1).item() == pytest.approx(1.1, abs=1e-6)
    # an image with no background (or no foreground) is left out
    full = torch.ones_like(mask)
    assert dense_contrast_loss(dense, full, text, "margin").item() == 0.0


def test_the_softmax_form_is_minus_the_log_share_on_the_foreground():
    text = torch.tensor([[1.0, 0.0]])
    flat = torch.tensor([[[[0.0, 1.0]] * 3] * 2])  # six locations, all at cosine 0: a uniform softmax
    mask = torch.tensor([[[True, False, False], [True, False, False]]])
    assert dense_contrast_loss(flat, mask, text, "softmax", scale=10.0).item() == pytest.approx(-math.log(2 / 6), abs=1e-6)


def test_the_peak_form_adds_the_gap_between_the_best_foreground_and_background_locations():
    text = torch.tensor([[1.0, 0.0]])
    # cosines 1, 0 (foreground) and 0, -1 (background): means 0.5 / -0.5, best 1 / 0
    dense = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [-3.0, 0.0]]]])
    mask = _grid([[1, 1], [0, 0]])
    assert dense_contrast_loss(dense, mask, text, "peak", margin=1.5).item() == pytest.approx(0.5 + 0.5, abs=1e-6)
    assert dense_contrast_loss(dense, mask, text, "peak", margin=1.0).item() == pytest.approx(0.0 + 0.0, abs=1e-6)
    # a background location as high as the best foreground one: the means are apart, the peaks are not
    tie = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [-1.0, 0.0]]]])  # fg 1, 0; bg 1, -1
    assert dense_contrast_loss(tie, mask, text, "margin", margin=0.5).item() == pytest.approx(0.0, abs=1e-6)
    assert dense_contrast_loss(tie, mask, text, "peak", margin=0.5).item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("form", ["margin", "softmax", "peak"])
def test_a_gradient_step_on_the_dense_term_raises_the_foreground_over_the_background(form):
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(3, 4, 4, 8, generator=g, requires_grad=True)
    text = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    mask = torch.rand(3, 4, 4, generator=g) > 0.6

    def gap() -> float:
        cos = torch.einsum("bhwd,bd->bhw", F.normalize(dense.detach(), dim=-1), text)
        return float(sum(cos[b][mask[b]].mean() - cos[b][~mask[b]].mean() for b in range(3)))

    before, losses = gap(), []
    for _ in range(50):
        loss = dense_contrast_loss(dense, mask, text, form, margin=2.0, scale=10.0)
        losses.append(loss.item())
        dense.grad = None
        loss.backward()
        with torch.no_grad():
            dense -= 2.0 * dense.grad
    assert before < 0 < gap() and gap() > before + 0.5 and losses[-1] < losses[0]  # from the background's side to the foreground's


def test_a_caption_s_object_phrases_are_its_colour_shape_pairs_once_each_in_order():
    assert object_phrases("a red star next to an orange ring and a red star on a striped background") == ["a red star",
                                                                                                         "an orange ring"]
    assert object_phrases("two shapes: a blue circle and a pink heart") == ["a blue circle", "a pink heart"]
    assert object_phrases("a photo of a star.") == [] and object_phrases("a red starfish on a beach") == []


def test_the_phrase_term_is_minus_the_log_of_each_phrase_s_mean_share_over_its_image_s_foreground():
    # one image, three locations (the third is background); three phrases along the axes
    dense = torch.tensor([[[[1.0, 0.2, 0.0], [0.9, 0.0, 0.4], [0.0, 3.0, 0.0]]]])  # (1, 1, 3, 3)
    mask = torch.tensor([[[True, True, False]]])
    phrases = torch.eye(3)
    owner, which = torch.tensor([0, 0]), torch.tensor([0, 1])
    share = torch.softmax(10 * F.normalize(dense.flatten(1, 2), dim=-1)[0] @ phrases.T, dim=-1)  # (3 locations, 3 phrases)
    expected = -(share[:2, 0].mean().log() + share[:2, 1].mean().log()) / 2  # phrase 1's strong background location is not counted
    value = phrase_share_loss(dense, mask, phrases, owner, which, scale=10.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert phrase_share_loss(dense, torch.zeros_like(mask), phrases, owner, which).item() == 0.0  # no foreground: nothing to share


def test_a_gradient_step_on_the_phrase_term_makes_each_phrase_the_best_text_somewhere_on_its_foreground():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(4, 3, 3, 8, generator=g, requires_grad=True)
    phrases = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    mask = torch.rand(4, 3, 3, generator=g) > 0.4
    owner, which = torch.tensor([0, 0, 1, 2, 3, 3]), torch.tensor([0, 1, 2, 3, 4, 0])

    def wins() -> int:
        best = (F.normalize(dense.detach().flatten(1, 2), dim=-1) @ phrases.T).argmax(dim=-1)  # (N, L): the best phrase
        return sum(bool(((best[o] == w) & mask.flatten(1)[o]).any()) for o, w in zip(owner.tolist(), which.tolist()))

    before = wins()
    for _ in range(60):
        loss = phrase_share_loss(dense, mask, phrases, owner, which, scale=10.0)
        dense.grad = None
        loss.backward()
        with torch.no_grad():
            dense -= 1.0 * dense.grad
    assert before < len(which) and wins() == len(which)  # the two phrases of images 0 and 3 each win a location of their own


def test_the_phrase_term_reads_the_captions_phrases_and_adds_nothing_without_them():
    adapter = make_adapter("vit")
    embedder = make_embedder(adapter, PoolingConfig(head="attention", mask_source="cls_attention"), masks=True, keep_dense=True)
    images = random_images(adapter, batch=2)
    out = embedder(adapter.model, images)
    term = PhraseTerm(adapter.tokenize, 0.5)
    captions = ["a red star next to a blue ring", "a photo of a red star on a plain background"]
    value = term(adapter.model, images, None, out, None, captions)
    phrases = F.normalize(adapter.model.encode_text(adapter.tokenize(["a red star", "a blue ring"])), dim=-1)
    expected = phrase_share_loss(out.dense, out.mask, phrases, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]),
                                adapter.model.logit_scale.exp())
    assert value.item() == pytest.approx(0.5 * expected.item(), rel=1e-5) and value.item() > 0
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.model.transformer.parameters())  # the text side learns
    assert term(adapter.model, images, None, out, None, ["a photo", "two dogs"]).item() == 0.0


def test_distillation_and_l2sp_are_zero_at_the_start_and_grow_with_the_distance():
    emb = F.normalize(torch.randn(4, 6), dim=-1)
    assert distillation_loss(emb, emb.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(emb, -emb).item() == pytest.approx(2.0, abs=1e-6)
    p = torch.nn.Parameter(torch.zeros(3, 2))
    anchor = p.detach().clone()
    assert l2sp_loss([p], [anchor]).item() == 0.0
    with torch.no_grad():
        p.add_(0.5)
    assert l2sp_loss([p], [anchor]).item() == pytest.approx(6 * 0.25)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
@pytest.mark.parametrize("head", ["masked_max", "attention"])
def test_the_dense_term_reads_the_free_attention_mask_with_any_head(arch, head):
    adapter = make_adapter(arch)
    config = PoolingConfig(head=head, mask_source="cls_attention", mask_mass=0.5)
    embedder = make_embedder(adapter, config, masks=True, keep_dense=True)
    images = random_images(adapter, batch=2)
    out = embedder(adapter.model, images)
    _, dense = adapter.pooled_and_dense(images)
    assert torch.allclose(out.dense, dense, atol=1e-5) and torch.equal(out.mask, embedder.masks(images))
    if head == "attention":  # the model's own head still pools: the term adds to it, the head stays
        assert torch.allclose(out.pooled, adapter.model.encode_image(images), atol=1e-5) and out.served is None
    else:  # masked max pools inside the mask in training, serves the unmasked max
        assert torch.allclose(out.served, dense.flatten(1, 2).amax(dim=1), atol=1e-5)
    text = F.normalize(adapter.model.encode_text(adapter.tokenize(["a star", "a ring"])), dim=-1)
    value = DenseTerm("margin", 2.0, 0.3)(adapter.model, images, None, out, text, ["a star", "a ring"])
    assert value.item() == pytest.approx(2 * dense_contrast_loss(dense, out.mask, text, "margin", 0.3).item(), rel=1e-5)
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.model.visual.parameters())


def test_the_zero_shot_keepers_are_zero_at_the_starting_model_and_grow_as_it_moves(tmp_path):
    folder = str(tiny_model(tmp_path, "vit"))
    recipe = FinetuneRecipe(start=Start(model=folder), pooling=PoolingConfig(head="attention"),
                            loss=LossTerms(distill=1.0, l2sp=0.1), data=DataRecipe(image_size=32),
                            settings=TrainSettings(steps=1, batch_size=4))
    run, _ = build_run(recipe)
    distill, l2sp = run.terms
    assert isinstance(distill, DistillTerm) and isinstance(l2sp, L2SPTerm)
    model, tokens = run.model, run.tokenizer(["a red star", "a blue ring"])
    images = torch.rand(2, 3, 32, 32)

    @torch.no_grad()
    def values() -> tuple[float, float]:
        embedded = run.embedder(model, images)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        captions = ["a red star", "a blue ring"]
        return (float(distill(model, images, tokens, embedded, text, captions)),
                float(l2sp(model, images, tokens, embedded, text, captions)))

    assert values() == pytest.approx((0.0, 0.0), abs=1e-6)
    with torch.no_grad():
        model.visual.proj.add_(0.3 * torch.randn_like(model.visual.proj))
        model.text_projection.add_(0.3 * torch.randn_like(model.text_projection))
    moved = values()
    assert moved[0] > 1e-3 and moved[1] == pytest.approx(0.1 * 0.09 * (model.visual.proj.numel() + model.text_projection.numel()),
                                                           rel=0.2)


def test_recipes_with_every_term_train_and_record_them(tmp_path):
    folder = str(tiny_model(tmp_path, "vit"))
    loss = LossTerms(background_negatives="max", dense="softmax", dense_weight=0.5, phrases=0.5, distill=0.5, l2sp=0.01)
    recipe = FinetuneRecipe(pooling=PoolingConfig(head="masked_max", mask_source="similarity"), loss=loss,
                            settings=TrainSettings(steps=2, batch_size=4, warmup=1), data=DataRecipe(image_size=32))
    result = finetune(folder, recipe, "synthetic", tmp_path / "out", progress=False)
    assert set(result.terms) == {"contrastive", "dense", "phrases", "distill", "l2sp"}
    assert all(math.isfinite(v) for v in result.terms.values())
    from eclip.train import recipe_of

    assert recipe_of(load_model(str(tmp_path / "out"))).loss == loss
    run, _ = build_run(recipe.replace(start=Start(model=folder)))
    assert run.embedder.masks.model is run.terms[2].teacher  # one frozen copy serves the masks and the distillation


@pytest.mark.parametrize(("changes", "field"), [({"loss__dense": "hinge"}, "loss.dense"), ({"loss__distill": -1.0}, "loss.distill"),
                                                ({"loss__dense": "margin", "pooling__mask_source": "none"}, "loss.dense"),
                                                ({"loss__phrases": 1.0, "pooling__mask_source": "none"}, "loss.phrases"),
                                                ({"loss__phrases": -1.0}, "loss.phrases"),
                                                ({"loss__phrase_set": "captions"}, "loss.phrase_set")])
def test_bad_term_options_name_their_field(changes, field):
    with pytest.raises(RecipeError, match=f"`{field}`"):
        FinetuneRecipe().replace(**changes)


def test_the_vocabulary_phrase_set_meets_every_colour_shape_phrase():
    adapter = make_adapter("vit")
    embedder = make_embedder(adapter, PoolingConfig(head="attention", mask_source="cls_attention"), masks=True, keep_dense=True)
    images = random_images(adapter, batch=1)
    out = embedder(adapter.model, images)
    seen = []
    tokenize = adapter.tokenize

    def recording(texts):
        seen.append(list(texts))
        return tokenize(texts)

    PhraseTerm(recording, 1.0, vocabulary=True)(adapter.model, images, None, out, None, ["a red star on a plain background"])
    assert len(seen[0]) == 64 and seen[0][0] == "a red star" and len(set(seen[0])) == 64
    PhraseTerm(recording, 1.0)(adapter.model, images, None, out, None, ["a red star on a plain background"])
    assert seen[1] == ["a red star"]


def test_every_recipe_field_has_its_train_flag():
    from dataclasses import fields

    from eclip.cli.train import FLAGS

    for section, kind in (("loss", LossTerms), ("settings", TrainSettings), ("data", DataRecipe), ("pooling", PoolingConfig)):
        assert [f.name for f in fields(kind) if f"{section}.{f.name}" not in FLAGS] == []
