"""ECLIP variants (ours): background negatives, object-only captions, shards."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_adapter, random_images

from eclip.data.shard_stream import WebDatasetPairs
from eclip.data.shards import write_shards
from eclip.data.synthetic import (
    CAPTION_SETS,
    OBJECT_CAPTION_TEMPLATES,
    PROMPT_TEMPLATE,
    SceneConfig,
    batch_of_scenes,
    render_scene,
    scene_seed,
)
from eclip.errors import RecipeError
from eclip.models.pooling import PoolingConfig
from eclip.train.losses import LossTerms, clip_loss
from eclip.train.parts import make_embedder
from eclip.train.recipe import FinetuneRecipe

ROOT = Path(__file__).resolve().parents[1]


def _unit(rows: list[list[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_background_negatives_join_the_text_to_image_softmax_only():
    img, txt = _unit([[1, 0, 0], [0, 1, 0]]), _unit([[1, 0, 0], [0, 1, 0]])
    scale = torch.tensor(10.0)
    plain = clip_loss(img, txt, scale)
    # a background identical to its own image's foreground: each caption now has two equal best
    # candidates, so the text-to-image term grows by exactly log 2 and the total by log(2) / 2
    same = clip_loss(img, txt, scale, image_negatives=img.clone())
    by_hand_t = -torch.log_softmax(torch.tensor([10.0, 0.0, 10.0, 0.0]), dim=0)[0]
    by_hand_i = -torch.log_softmax(torch.tensor([10.0, 0.0]), dim=0)[0]
    assert same.item() == pytest.approx(((by_hand_i + by_hand_t) / 2).item(), rel=1e-6)
    assert same.item() - plain.item() == pytest.approx(math.log(2) / 2, abs=1e-4)
    # an invalid background (mask covering every location) is left out: the loss is the plain one
    left_out = clip_loss(img, txt, scale, image_negatives=img.clone(), negatives_valid=torch.tensor([False, False]))
    assert left_out.item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("arch", ["vit", "resnet"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_background_is_pooled_outside_the_mask(arch, pooling):
    adapter = make_adapter(arch)
    embedder = make_embedder(adapter, PoolingConfig(head="masked_max", mask_source="cls_attention", mask_mass=0.5), pooling)
    images = random_images(adapter, batch=2)
    out = embedder(adapter.model, images)
    assert out.negatives is not None and out.valid is not None
    _, dense = adapter.pooled_and_dense(images)
    mask = embedder.masks(images)
    for b in range(2):
        inside, outside = dense[b][mask[b]], dense[b][~mask[b]]
        assert torch.allclose(out.pooled[b], inside.amax(dim=0), atol=1e-5)
        expected = outside.amax(dim=0) if pooling == "max" else outside.mean(dim=0)
        assert torch.allclose(out.negatives[b], expected, atol=1e-5)
    assert out.valid.all()


def test_background_negatives_need_a_mask():
    with pytest.raises(RecipeError, match="`loss.background_negatives` max needs the masked_max head"):
        FinetuneRecipe(pooling=PoolingConfig(head="max"), loss=LossTerms(background_negatives="max"))
    with pytest.raises(RecipeError, match="none, max, avg"):
        LossTerms(background_negatives="median")


def test_object_captions_never_name_the_background():
    assert OBJECT_CAPTION_TEMPLATES and all("{background}" not in t for t in OBJECT_CAPTION_TEMPLATES)
    images_all, captions_all = batch_of_scenes(5, 0, 12, SceneConfig(caption_templates=CAPTION_SETS["all"]))
    images_obj, captions_obj = batch_of_scenes(5, 0, 12, SceneConfig(caption_templates=CAPTION_SETS["objects"]))
    assert np.array_equal(images_all, images_obj)  # the same scenes, only the captions differ
    assert not any("background" in c for c in captions_obj)
    assert any("background" in c for c in captions_all)


def test_shape_captions_speak_the_zero_shot_prompt():
    """A one-object scene captioned by the shape template is exactly its class prompt."""
    config = SceneConfig(min_objects=1, max_objects=1, caption_templates=("a photo of {shape_list}.",))
    scenes = [render_scene(scene_seed(3, i), config) for i in range(6)]
    assert all(s.caption == PROMPT_TEMPLATE.format(s.objects[0].shape) for s in scenes)
    two = render_scene(scene_seed(3, 0), SceneConfig(min_objects=2, max_objects=2, caption_templates=("a photo of {shape_list}.",)))
    assert two.caption.startswith("a photo of a") and " and a" in two.caption and two.caption.endswith(".")


def test_shards_hold_the_scenes_and_captions(tmp_path):
    config = SceneConfig(image_size=32)
    shards = write_shards(tmp_path / "pairs", 7, seed=9, config=config, shard_size=3)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not list((tmp_path / "pairs").glob(".*.tmp"))
    samples = WebDatasetPairs(shards, image_size=32).stream(0, 1, 7, None, False, None, 0).samples(0)
    epoch = [item for _, item in (next(samples) for _ in range(7))]  # one epoch of the stream
    images, captions = batch_of_scenes(9, 0, 7, config)
    assert sorted(caption for _, caption in epoch) == sorted(captions)
    assert all(any(np.array_equal(image.permute(1, 2, 0).numpy(), scene) for image, _ in epoch) for scene in images)


def test_ablation_settings_parse_into_recipes():
    sys.path.insert(0, str(ROOT / "bench"))
    from eclip_ablation import describe, parse_setting

    from eclip.train.recipe import DataRecipe, Start

    base = FinetuneRecipe(start=Start(model="synth-vit"), data=DataRecipe(seed=1001))
    recipe = parse_setting("masked_max/similarity/0.6+bgavg+objects+last2+lr5e-5+steps900", base)
    assert recipe.pooling == PoolingConfig(head="masked_max", mask_source="similarity", mask_mass=0.6)
    assert recipe.loss.background_negatives == "avg" and recipe.train == "last:2"
    assert (recipe.settings.lr, recipe.settings.steps) == (5e-5, 900) and recipe.settings.batch_size == base.settings.batch_size
    assert recipe.data == DataRecipe(seed=1001, captions="objects") and recipe.start == base.start
    assert describe("masked_max/similarity/0.6+bgavg", recipe)["mask"] == "mass 0.6"
    terms = parse_setting("attention/similarity/0.6+densepeak+margin0.2+phrases0.3+distill1", base)
    assert terms.loss == LossTerms(dense="peak", dense_margin=0.2, phrases=0.3, distill=1.0)
    assert describe("attention/similarity/0.6+phrases1", parse_setting("attention/similarity/0.6+phrases1", base))["mask"] == "mass 0.6"
    topk = parse_setting("masked_max/rollout/top0.3+normalized+current", base).pooling
    assert (topk.mask_rule, topk.mask_topk, topk.max_over, topk.mask_from) == ("topk", 0.3, "normalized", "current")
    # pairs written with the setting's captions are read from their files; captions the data cannot have are refused
    files = parse_setting("max+objects", base, {"objects": "pairs-objects"}).data
    assert files == DataRecipe(kind="files", path="pairs-objects", seed=None, max_objects=None, captions="objects")
    on_files = base.replace(data=DataRecipe.from_spec("pairs-all", captions="all"))
    with pytest.raises(SystemExit, match="shapes"):
        parse_setting("max+shapes", on_files)
    with pytest.raises(SystemExit):
        parse_setting("max+wings", base)
    with pytest.raises(RecipeError, match="pooling.head"):
        parse_setting("median", base)


def test_fine_tune_deltas_rebuild_the_model(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from helpers import make_open_clip
    from train_bundled import apply_delta, delta_state

    from eclip.models.folder import save_model_folder

    parent, child = tmp_path / "parent", tmp_path / "child"
    model = make_open_clip("vit", seed=1)
    config = {"arch": "vit", "open_clip": {}, "preprocess": {}}
    save_model_folder(parent, model, config, half=True)
    with torch.no_grad():
        model.visual.proj.add_(0.5)
        model.token_embedding.weight[[3, 7]] += 1.0
    save_model_folder(child, model, config)
    delta = delta_state(child, parent)
    assert set(delta) == {"visual.proj", "token_embedding.rows", "token_embedding.values"}
    assert delta["token_embedding.rows"].tolist() == [3, 7]
    rebuilt = apply_delta(parent, delta)
    expected = {k: v.half() for k, v in model.state_dict().items()}
    assert all(torch.equal(rebuilt[k], expected[k]) for k in expected)


def test_the_gpu_script_runs_settings_that_parse_and_packs_what_validation_selects():
    import subprocess

    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "scripts"))
    from eclip_ablation import parse_setting
    from train_bundled import select_issue20

    from eclip.train.recipe import DataRecipe, Start

    listed = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_issue20.sh"), "--settings"], capture_output=True, text=True, check=True)
    base = FinetuneRecipe(start=Start(model="synth-vit"), data=DataRecipe.from_spec("pairs-all", captions="all"))
    files = {"all": "pairs-all", "objects": "pairs-objects", "shapes": "pairs-shapes"}
    for line in listed.stdout.splitlines():
        arch, settings = line.split(": ")
        recipes = [parse_setting(spec, base, files) for spec in settings.split()]
        assert {r.pooling.head for r in recipes} >= {"masked_max", "attention"} and any(r.loss.dense != "none" for r in recipes), arch
        assert any(r.loss.distill for r in recipes) and any(r.loss.l2sp for r in recipes) and any(r.train == "visual" for r in recipes)
        assert any(r.loss.phrases for r in recipes), arch

    def row(setting, msc, zero_shot):
        return {"setting": setting, "validation": {"score_contrast": msc, "zero_shot": zero_shot}, "test": {}}

    rows = [row("vanilla", -0.06, 0.60), row("a", 0.10, 0.50), row("b", 0.15, 0.55), row("c", 0.05, 0.595), row("d", 0.02, 0.62)]
    assert select_issue20(rows) == ["b", "c"]  # the best mSC, and the best within one point of zero-shot
    assert select_issue20(rows[:3]) == ["b"]


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_specific_itsm_reads_the_text_minus_the_shared_part(arch):
    from eclip.methods.base import get_method

    adapter = make_adapter(arch)
    images = random_images(adapter, batch=2)
    texts = adapter.encode_text(["red star", "blue circle", "green ring"])
    raw = get_method("itsm_specific").explain(adapter, images, texts).raw
    dense = F.normalize(adapter.dense(images).float(), dim=-1)
    specific = F.normalize(texts - texts.mean(dim=0, keepdim=True), dim=-1)
    assert torch.allclose(raw, torch.einsum("bhwd,kd->bkhw", dense, specific), atol=1e-5)
    # the shared part is what the plain ITSM adds: the two maps differ
    assert not torch.allclose(raw, get_method("itsm").explain(adapter, images, texts).raw, atol=1e-3)
    one = get_method("itsm_specific").explain(adapter, images, texts[:1]).raw
    from eclip.methods.surgery import empty_text_embedding

    empty = empty_text_embedding(adapter)[None]
    expected = torch.einsum("bhwd,kd->bkhw", dense, F.normalize(texts[:1] - empty, dim=-1))
    assert torch.allclose(one, expected, atol=1e-5)


def test_the_token_probe_reads_shape_and_colour_from_the_tokens_inside_each_object():
    sys.path.insert(0, str(ROOT / "bench"))
    from token_probe import block_dense, class_mean_accuracy, object_means, object_tokens

    # two well-separated classes: the nearest class mean is always right; a class never fitted never wins
    fit = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]), dim=1)
    assert class_mean_accuracy(fit, torch.tensor([0, 0, 3, 3]), fit, torch.tensor([0, 0, 3, 3])) == 1.0
    assert class_mean_accuracy(fit[:2], torch.tensor([0, 0]), fit, torch.tensor([0, 0, 3, 3])) == 0.5
    adapter = make_adapter("vit")
    (tokens,), shapes, colours, owners = object_tokens(adapter, 5, 4, adapter.image_size[0])
    assert len(tokens) == len(shapes) == len(colours) == len(owners) > 0 and int(shapes.max()) < 8 and int(colours.max()) < 8
    assert torch.allclose(tokens.norm(dim=1), torch.ones(len(tokens)), atol=1e-5)
    means, labels = object_means(tokens, shapes, owners)
    first = owners == owners[0]
    assert len(means) == len(owners.unique()) and labels[0] == shapes[0]  # one vector per object, its tokens' mean
    assert torch.allclose(means[0], F.normalize(tokens[first].mean(0), dim=0), atol=1e-6)
    image = random_images(adapter, batch=1)
    grids = block_dense(adapter, image)  # the last block's tokens are the model's dense features, computed the same way
    assert len(grids) == adapter.num_layers + 1 and torch.equal(grids[-1], adapter.pooled_and_dense(image)[1][0])
    by_block, block_shapes, _, _ = object_tokens(adapter, 5, 4, adapter.image_size[0], blocks=True)
    assert len(by_block) == adapter.num_layers + 1 and torch.equal(block_shapes, shapes)  # one pass, every block, same objects
    assert torch.allclose(by_block[-1], tokens, atol=1e-6)


def test_the_ablation_table_shows_segmentation_columns_when_measured():
    sys.path.insert(0, str(ROOT / "bench"))
    from eclip_ablation import markdown

    numbers = {"zero_shot": 0.5, "score_contrast": 0.1, "fg_iou": 0.2, "inverted_rate": 0.1, "pointing": 0.3}
    plain = {"setting": "s", "map": "itsm", "wall_s": None, "validation": numbers, "test": numbers}
    assert "seg." not in markdown([plain], "t")
    measured = {**plain, "validation": {**numbers, "segmentation_miou": {"shapes": 0.052, "phrases": 0.011}}}
    table = markdown([measured, plain], "t")
    assert "seg. mIoU shapes" in table and "| 5.2 / - | 1.1 / - |" in table and table.endswith("| - / - | - / - | - |")
