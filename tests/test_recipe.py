"""The fine-tune recipe: one description from the CLI, Python and the model folder's record, read back as written."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_model
from typer.testing import CliRunner

from eclip.errors import RecipeError
from eclip.models.loading import BUNDLED, bundled_dir, load_model
from eclip.models.pooling import PoolingConfig
from eclip.train import DataRecipe, FinetuneRecipe, LossTerms, Start, TrainSettings, build_run, finetune, read_recipe, recipe_of
from eclip.train.loop import train
from eclip.train.parts import make_embedder

ECLIP = FinetuneRecipe(pooling=PoolingConfig(head="masked_max", mask_source="similarity", mask_mass=0.5),
                       loss=LossTerms(background_negatives="max"),
                       data=DataRecipe(seed=1001, image_size=32, captions="objects"),
                       settings=TrainSettings(steps=2, batch_size=4, lr=1e-3, warmup=1, checkpoint_every=2))


def _cli(*args: str):
    import eclip.cli as cli

    result = CliRunner().invoke(cli.app, ["train", *args])
    return result


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_model(str(folder)).model.state_dict()


def test_finetune_is_the_one_call_whatever_was_imported_before():
    import eclip.train
    import eclip.train.parts  # noqa: F401  (a submodule named `finetune` used to replace the function on the package)

    assert eclip.train.finetune is finetune and callable(eclip.train.finetune)


def test_a_recipe_round_trips_through_json_and_the_model_record():
    recipe = ECLIP.replace(start=Start(model="synth-vit"), train="last:2")
    assert FinetuneRecipe.from_json(json.loads(json.dumps(recipe.to_json()))) == recipe
    config = {"pooling": recipe.pooling.to_json(), "training": recipe.record()}
    assert "pooling" not in config["training"] and FinetuneRecipe.from_config(config) == recipe
    assert FinetuneRecipe.from_config({"pooling": None}) is None


def test_records_written_before_recipes_read_as_recipes():
    old = {"steps": 300, "batch_size": 64, "lr": 2e-4, "weight_decay": 0.1, "warmup": 30, "seed": 0, "checkpoint_every": 100,
           "grad_clip": 1.0, "extra": {"data": {"kind": "files", "path": "pairs", "image_size": 96},
                                       "start": {"model": "synth-rn", "pretrained": None}, "train": "visual",
                                       "loss": {"background_negatives": "avg"}}}
    recipe = FinetuneRecipe.from_config({"pooling": {"head": "masked_max"}, "training": old})
    assert recipe.start == Start(model="synth-rn") and recipe.train == "visual" and recipe.settings.steps == 300
    assert recipe.data == DataRecipe(kind="files", path="pairs", seed=None, max_objects=None, captions=None, image_size=96)
    assert recipe.loss.background_negatives == "avg"


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_every_bundled_model_records_the_recipe_it_was_made_with(name):
    config = json.loads((bundled_dir(name) / "config.json").read_text())
    recipe = read_recipe(name)
    assert recipe == FinetuneRecipe.from_config(config) and recipe.pooling == PoolingConfig.from_json(config["pooling"])
    assert recipe.data.image_size == 96  # every bundled model saw 96 px scenes, whatever its input size
    if recipe.start in (Start(config=name), Start(model=name)):  # a vanilla model: from scratch, or its own weights trained on
        assert recipe.pooling.is_native and recipe.data == DataRecipe(seed=1000, image_size=96)
    else:  # a fine-tune (any head, synth-vit-dense keeps the model's own) of the bundled vanilla model of its architecture
        assert recipe.start.model in BUNDLED and recipe.start.model != name and name.startswith(recipe.start.model)


@pytest.mark.parametrize(("section", "bad"), [("recipe", {"stepz": 3}), ("settings", {"settings": {"stepz": 3}}),
                                              ("loss", {"loss": {"dense": "x", "bogus": 1}}), ("pooling", {"pooling": {"heads": "max"}})])
def test_unknown_keys_are_refused_naming_the_section(section, bad):
    with pytest.raises(RecipeError, match=f"`{section}` has unknown keys"):
        FinetuneRecipe.from_json(bad)


def test_options_that_do_not_go_together_are_refused():
    with pytest.raises(RecipeError, match="`train` 'half'"):
        FinetuneRecipe(train="half")
    with pytest.raises(RecipeError, match="`data.captions` 'poems'"):
        DataRecipe(captions="poems")
    with pytest.raises(RecipeError, match="`start`"):
        Start(model="synth-vit", config="synth-vit")
    with pytest.raises(RecipeError, match="`start` is missing"):
        build_run(FinetuneRecipe())


def test_the_cli_and_python_build_the_same_fine_tune(tmp_path):
    start = tiny_model(tmp_path, "vit")
    python = finetune(str(start), ECLIP, "synthetic", tmp_path / "python", progress=False)
    done = _cli("--model", str(start), "--out", str(tmp_path / "cli"), "--steps", "2", "--batch-size", "4", "--lr", "1e-3",
                "--warmup", "1", "--checkpoint-every", "2", "--scene-size", "32", "--data-seed", "1001", "--captions", "objects",
                "--pooling", "masked_max", "--mask-source", "similarity", "--mask-mass", "0.5", "--background-negatives", "max")
    assert done.exit_code == 0, done.output
    written = json.loads((tmp_path / "python" / "config.json").read_text())
    assert written == json.loads((tmp_path / "cli" / "config.json").read_text())
    assert recipe_of(load_model(str(tmp_path / "python"))) == ECLIP.replace(start=Start(model=str(start)))
    assert written["training"]["settings"]["steps"] == python.steps_done == 2 and set(python.terms) == {"contrastive"}
    a, b = _weights(tmp_path / "python"), _weights(tmp_path / "cli")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the model's own record is a recipe: `--recipe MODEL` makes the same fine-tune again
    again = _cli("--recipe", str(tmp_path / "cli"), "--out", str(tmp_path / "again"))
    assert again.exit_code == 0, again.output
    c = _weights(tmp_path / "again")
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == written


def test_the_loss_is_chosen_by_its_field_not_by_what_the_embedder_returns(tmp_path):
    folder = str(tiny_model(tmp_path, "vit"))
    recipe = ECLIP.replace(start=Start(model=folder), settings__steps=1)
    plain = recipe.replace(loss__background_negatives="none")
    runs = {"negatives": build_run(recipe)[0], "plain": build_run(plain)[0], "reference": build_run(plain)[0]}
    # an embedder that computes background negatives, which the loss must leave out
    runs["plain"].embedder = make_embedder(runs["plain"].embedder.adapter, recipe.pooling, "max")
    assert runs["plain"].embedder(runs["plain"].model, torch.rand(2, 3, 32, 32)).negatives is not None
    assert runs["reference"].embedder(runs["reference"].model, torch.rand(2, 3, 32, 32)).negatives is None
    first = {name: train(run, tmp_path / name, progress=False).losses[0] for name, run in runs.items()}
    assert first["plain"] == pytest.approx(first["reference"], abs=1e-6)
    assert first["negatives"] > first["plain"] + 1e-3  # more negatives in the text-to-image softmax


def test_cli_messages_name_the_flags_and_library_messages_the_fields(tmp_path):
    start = tiny_model(tmp_path, "vit")
    bad = FinetuneRecipe(pooling=PoolingConfig(head="max"), loss=LossTerms()).replace
    with pytest.raises(RecipeError, match="`loss.background_negatives` max needs the masked_max head"):
        bad(loss__background_negatives="max")
    done = _cli("--model", str(start), "--out", str(tmp_path / "x"), "--pooling", "max", "--background-negatives", "max")
    assert done.exit_code != 0 and isinstance(done.exception, RecipeError)
    assert str(done.exception).startswith("--background-negatives max needs the masked_max head"), done.exception
    done = _cli("--model", str(start), "--out", str(tmp_path / "x"), "--train", "last:9", "--steps", "1")
    assert str(done.exception).startswith("--train last:9: the image tower has 2 blocks"), done.exception
